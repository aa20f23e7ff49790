"""Whisper-style prompts as context: WER with and without a prompt, bundled model and LM.

Decodes held-out clips (../shared/corpora, LJ Speech test split by default) with no prompt, an
ordinary Whisper prompt, each clip's own text as its prompt, and another clip's text (an
unrelated prompt): the prompt's rare words are boosted as `harken serve` does
(`harken.serving.openai_api.prompt_bias`); the log-probabilities are cached in exp/.

    CORPUS=ljspeech python benchmarks/prompt_context.py [boost scale] [clips]
"""
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
import numpy as np
from harken.model import load_model
from harken.decoding.ctc_beam import get_decoder
from harken.training.evaluate import error_rates
from harken.serving.openai_api import prompt_bias
corpus = Path("/work/shared/corpora/" + os.environ.get("CORPUS", "ljspeech"))
model = load_model("en-small")
norm = model.tokenizer.normalizer
count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
rows = [json.loads(line) for line in open(corpus / "test.jsonl")][:count]
cache = Path("exp") / f"{corpus.name}_{count}_logprobs.npz"
if cache.exists():
    lps = list(np.load(cache).values())
else:
    from harken.audio import load_audio

    lps = [model.log_probs([load_audio(str(corpus / r["audio"]), model.sample_rate)])[0]
           for r in rows]
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, *lps)
refs = [r["text"] for r in rows]
base = model.decode_options()
boost_scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
def run(prompts):
    hyps = []
    for lp, prompt in zip(lps, prompts):
        hw = {w: b * boost_scale for w, b in prompt_bias(prompt, norm).items()}
        dec = get_decoder(model.tokenizer, dataclasses.replace(base, hotwords=hw))
        hyps.append(dec.decode(lp, model.frame_seconds).text)
    return error_rates(refs, hyps)["wer"]
t = time.perf_counter()
print("no prompt", round(run([None] * len(rows)), 4))
print("whisper prompt", round(run(["The following is a clear reading of a sentence from a novel."] * len(rows)), 4))
print("own rare words", round(run([r["text_raw"] if "text_raw" in r else r["text"] for r in rows]), 4))
shift = [rows[(i + 7) % len(rows)].get("text_raw", rows[(i + 7) % len(rows)]["text"]) for i in range(len(rows))]
print("another clip's text", round(run(shift), 4), f"{time.perf_counter()-t:.0f}s")
