"""Decoding: (time, vocab) log-probabilities -> `Transcript`.

    types.py             Transcript, Word, Segment, Alternative: the results
    greedy.py            best-path CTC decoding
    options.py           DecodeOptions (validated once) and how model defaults combine with them
    ctc_beam.py          CTC prefix beam search with an n-gram LM and hotwords (flashlight-text)
    lm.py                n-gram language models: building, vocabularies, stored tuned weights
    transducer_search.py greedy and beam search of transducer (RNN-T) models

The names below are the package's public API (`from harken.decoding import DecodeOptions`).
"""

from harken.decoding.ctc_beam import Decoder, beam_decode, get_decoder
from harken.decoding.greedy import best_path, check_log_probs, collapse_path, greedy_decode, path_transcript
from harken.decoding.options import (DEFAULT_BEAM_THRESHOLD, DEFAULT_BEAM_WIDTH, DEFAULT_LM_WEIGHT,
                                     DEFAULT_TOKEN_BEAM, DEFAULT_WORD_SCORE, GREEDY, DecodeOptions,
                                     resolve_options)
from harken.decoding.types import (SEGMENT_MAX_SECONDS, SEGMENT_PAUSE_SECONDS, Alternative, Segment,
                                   Transcript, Word, WordTokenizer, build_transcript, group_segments)

__all__ = [
    "Alternative", "DEFAULT_BEAM_THRESHOLD", "DEFAULT_BEAM_WIDTH", "DEFAULT_LM_WEIGHT",
    "DEFAULT_TOKEN_BEAM", "DEFAULT_WORD_SCORE", "Decoder", "DecodeOptions", "GREEDY",
    "SEGMENT_MAX_SECONDS", "SEGMENT_PAUSE_SECONDS", "Segment", "Transcript", "Word", "WordTokenizer",
    "beam_decode", "best_path", "build_transcript", "check_log_probs", "collapse_path", "get_decoder",
    "greedy_decode", "group_segments", "path_transcript", "resolve_options",
]
