// AudioWorklet: microphone samples at the context's rate -> 16 kHz PCM16 blocks of 100 ms.
// Resampling: each output sample averages the input samples of its own interval (a box
// low-pass filter, enough against aliasing for speech at 44.1/48 kHz) with fractional
// interval edges handled by weighting.
const TARGET_RATE = 16000;
const BLOCK = TARGET_RATE / 10;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;  // input samples per output sample
    this.sum = 0;      // weighted input of the current output interval
    this.weight = 0;   // input time it has covered so far
    this.out = new Int16Array(BLOCK);
    this.count = 0;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.out[this.count++] = clipped < 0 ? clipped * 32768 : clipped * 32767;
    if (this.count === BLOCK) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(BLOCK);
      this.count = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (const channel of channels) x += channel[i];
      x /= channels.length;
      // Input sample i covers one unit of input time; it goes into the current output
      // interval (length `step`) and, past the interval's end, into the next.
      let remaining = 1;
      while (remaining > 0) {
        const room = this.step - this.weight;
        const take = Math.min(room, remaining);
        this.sum += x * take;
        this.weight += take;
        remaining -= take;
        if (this.weight >= this.step - 1e-9) {
          this.emit(this.sum / this.weight);
          this.sum = 0;
          this.weight = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("harken-capture", CaptureProcessor);
