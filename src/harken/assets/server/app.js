// harken live captions: microphone -> AudioWorklet (16 kHz PCM16) -> WebSocket /v1/stream.
// Partial results are shown grey after the final ones (black); a file can be uploaded to
// /v1/audio/transcriptions as well.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
let audio = null;  // {context, source, node, stream}

function apiKey() {
  return $("api-key").value.trim();
}

function setStatus(text) {
  $("status").textContent = text;
}

function addFinal(text) {
  if (!text) return;
  const span = document.createElement("span");
  span.className = "final";
  span.textContent = ($("finals").childElementCount ? " " : "") + text;
  $("finals").appendChild(span);
  $("partial").textContent = "";
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === "partial") {
    $("partial").textContent = ($("finals").childElementCount ? " " : "") + message.text;
  } else if (message.type === "final") {
    addFinal(message.text);
  } else if (message.type === "ready") {
    setStatus("listening");
  } else if (message.type === "done") {
    setStatus(`done (${message.audio_seconds.toFixed(1)} s)`);
  } else if (message.type === "error") {
    setStatus(`error: ${message.message}`);
  }
}

async function start() {
  $("start").disabled = true;
  setStatus("starting");
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
      // Raw audio: the recogniser does better without the browser's call processing.
      {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false,
               autoGainControl: false}});
    const context = new AudioContext();
    await context.audioWorklet.addModule("/static/capture-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "harken-capture");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = apiKey() ? `?token=${encodeURIComponent(apiKey())}` : "";
    socket = new WebSocket(`${scheme}//${location.host}/v1/stream${token}`);
    socket.binaryType = "arraybuffer";
    socket.onmessage = onMessage;
    socket.onclose = () => {
      if ($("status").textContent === "listening") setStatus("closed");
      stop(false);
    };
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error("cannot connect to the server"));
    });
    socket.send(JSON.stringify({type: "config", sample_rate: 16000, encoding: "pcm_s16le",
                                partials: true}));
    node.port.onmessage = (event) => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(event.data);
    };
    source.connect(node);
    audio = {context, source, node, stream};
    $("stop").disabled = false;
  } catch (error) {
    setStatus(`error: ${error.message}`);
    stop(false);
  }
}

function stop(flush = true) {
  if (audio) {
    audio.source.disconnect();
    audio.node.port.onmessage = null;
    audio.stream.getTracks().forEach((track) => track.stop());
    audio.context.close();
    audio = null;
  }
  if (flush && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({type: "end"}));  // the server sends the last final and closes
  }
  $("start").disabled = false;
  $("stop").disabled = true;
}

async function upload() {
  const file = $("file").files[0];
  if (!file) {
    $("file-status").textContent = "choose a file first";
    return;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("model", "harken");
  form.append("response_format", "json");
  $("file-status").textContent = "transcribing";
  $("file-result").textContent = "";
  const headers = apiKey() ? {Authorization: `Bearer ${apiKey()}`} : {};
  try {
    const response = await fetch("/v1/audio/transcriptions", {method: "POST", body: form, headers});
    const body = await response.json();
    if (!response.ok) {
      $("file-status").textContent = `error: ${body.error.message}`;
      return;
    }
    $("file-status").textContent = "done";
    $("file-result").textContent = body.text;
  } catch (error) {
    $("file-status").textContent = `error: ${error.message}`;
  }
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop(true));
$("upload").addEventListener("click", upload);
