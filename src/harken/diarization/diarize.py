"""Speaker diarization: who spoke when, and which speaker said each word.

    speech segments (harken.vad) -> sliding windows -> speaker embeddings (harken.diarization.speakers)
    -> clustering (agglomerative, cosine, average linkage; the count estimated or given)
    -> a label per window, smoothed -> speaker turns

`diarize(audio, options)` returns a `Diarization` (turns, RTTM); `assign_speakers(transcript,
diarization)` gives each `Word` and `Segment` a speaker, cutting segments where the speaker
changes (each word gets the speaker that covers most of it). `OnlineDiarizer` labels a stream
one utterance at a time with labels that keep their names for the whole stream.

Long audio is diarized `chunk_seconds` at a time: only the embeddings (one small vector per
window) of the whole file stay in memory, never its features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harken.audio import load_audio, SAMPLE_RATE
from harken.errors import ConfigError
from harken.decoding import Segment, Transcript
from harken.vad import split_speech

DEFAULT_MAX_SPEAKERS = 8
# Average-linkage cosine distance at which two clusters are taken for different speakers
# (for the bundled GE2E encoder; chosen on training speakers, see docs/diarization.md).
DEFAULT_THRESHOLD = 0.36
MIN_SPEECH_SECONDS = 0.1
# "auto": agglomerative when the number of speakers is estimated; when it is given, the more
# cohesive of the agglomerative and spectral partitions (docs/diarization.md).
CLUSTERING = ("auto", "agglomerative", "spectral")
MIN_CLUSTER_SHARE = 0.08  # an estimated speaker has at least this share of the windows
MERGE_DISTANCE = 0.15  # estimated speakers whose centroids are closer are one speaker


@dataclass(frozen=True)
class DiarizeOptions:
    """How to diarize. `speakers`: the exact number of speakers, or None to estimate it
    between `min_speakers` and `max_speakers` with the distance `threshold` (cosine distance,
    average linkage). Windows of `window_seconds` every `hop_seconds` inside speech segments
    found by `vad` ("auto", "webrtc", "silero", "energy"); `smoothing` windows of median
    filtering on the labels; `encoder`: a speaker encoder folder (None: the bundled one);
    `clustering`: "agglomerative", "spectral" or "auto" (see `cluster_embeddings`)."""

    speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = DEFAULT_MAX_SPEAKERS
    threshold: float = DEFAULT_THRESHOLD
    window_seconds: float = 1.5
    hop_seconds: float = 0.75
    smoothing: int = 3
    vad: str = "auto"
    encoder: str | None = None
    chunk_seconds: float = 600.0
    clustering: str = "auto"

    def __post_init__(self) -> None:
        if self.clustering not in CLUSTERING:
            raise ConfigError(f"clustering must be one of {', '.join(CLUSTERING)}, got "
                              f"{self.clustering!r}")
        for name in ("speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is None and name == "speakers":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a whole number >= 1, "
                                  f"got {value!r}")
        if self.min_speakers > self.max_speakers:
            raise ConfigError(f"min-speakers ({self.min_speakers}) is more than max-speakers "
                              f"({self.max_speakers})")
        if self.speakers is not None and not (self.min_speakers <= self.speakers
                                              <= max(self.max_speakers, self.speakers)):
            raise ConfigError(f"speakers ({self.speakers}) is less than min-speakers "
                              f"({self.min_speakers})")
        if not 0 < self.threshold < 2:
            raise ConfigError(f"threshold is a cosine distance in (0, 2), got {self.threshold!r}")
        if not 0.2 <= self.window_seconds <= 10 or not 0 < self.hop_seconds <= self.window_seconds:
            raise ConfigError(f"need 0.2 <= window_seconds <= 10 and 0 < hop_seconds <= "
                              f"window_seconds, got {self.window_seconds}, {self.hop_seconds}")
        if self.smoothing < 1 or self.chunk_seconds < 10:
            raise ConfigError(f"need smoothing >= 1 and chunk_seconds >= 10, got "
                              f"{self.smoothing}, {self.chunk_seconds}")


@dataclass
class SpeakerTurn:
    """One speaker speaking from `start` to `end` (seconds)."""

    start: float
    end: float
    speaker: str


@dataclass
class Diarization:
    """The turns of one input in time order, and the speaker labels in order of appearance."""

    turns: list[SpeakerTurn] = field(default_factory=list)
    duration: float = 0.0

    @property
    def speakers(self) -> list[str]:
        seen: dict[str, None] = {}
        for turn in self.turns:
            seen.setdefault(turn.speaker, None)
        return list(seen)

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker that covers most of [start, end], or the nearest turn's speaker."""
        best, best_overlap = None, 0.0
        for turn in self.turns:
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > best_overlap:
                best, best_overlap = turn.speaker, overlap
        if best is None and self.turns:
            middle = (start + end) / 2
            nearest = min(self.turns, key=lambda t: min(abs(t.start - middle), abs(t.end - middle)))
            best = nearest.speaker
        return best

    def to_rttm(self, file_id: str = "audio") -> str:
        """The turns as RTTM lines (NIST: SPEAKER file 1 start duration <NA> <NA> name)."""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in file_id) or "audio"
        return "".join(f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                       f"{t.speaker} <NA> <NA>\n" for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {"speakers": self.speakers, "duration": self.duration,
                "turns": [{"start": t.start, "end": t.end, "speaker": t.speaker}
                          for t in self.turns]}


# --- clustering ----------------------------------------------------------------------------------

def cluster_embeddings(embeddings: np.ndarray, speakers: int | None = None, *,
                       min_speakers: int = 1, max_speakers: int = DEFAULT_MAX_SPEAKERS,
                       threshold: float = DEFAULT_THRESHOLD,
                       method: str = "auto") -> np.ndarray:
    """(N, D) embeddings -> (N,) cluster indices 0..K-1, numbered by first appearance.

    "agglomerative": cosine distance, average linkage; cut into `speakers` clusters when
    given, else where clusters are more than `threshold` apart, the count kept within
    [min_speakers, max_speakers], small clusters folded in and close ones joined; a few k-means
    steps refine the partition. "spectral": `spectralcluster` (ICASSP 2018 affinity
    refinement; an estimated count by eigengap once the agglomerative count is above one).
    "auto": agglomerative when the count is estimated; when it is given, whichever of the two
    partitions holds its windows closer to their centroids."""
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as exc:
        raise ImportError("speaker clustering needs scipy: pip install 'harken[diarize]'") from exc

    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2:
        raise ValueError(f"expected (N, D) embeddings, got shape {emb.shape}")
    n = len(emb)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    tree = linkage(emb, method="average", metric="cosine")
    if speakers is None:
        merges = tree[:, 2]  # merge distances, ascending; k clusters remain after n - k merges
        k = n - int(np.searchsorted(merges, threshold, side="right"))
        k = int(np.clip(k, min_speakers, max_speakers))
    else:
        k = speakers
    k = min(k, n)
    spectral = None
    if method != "agglomerative" and k > 1 and n > 2 * max(k, min_speakers) and (
            method == "spectral" or speakers is not None):
        labels = _spectral(emb, speakers, max(2, min_speakers), max_speakers)
        spectral = _renumber(_refine(emb, labels, int(labels.max()) + 1))
        if method == "spectral":
            return spectral
    labels = fcluster(tree, k, criterion="maxclust") - 1
    if speakers is None and k > min_speakers:
        labels = _drop_small(emb, labels, min_speakers)
        labels = _refine(emb, labels, len(np.unique(labels)))
        labels = _merge_close(emb, labels, min_speakers)
        k = len(np.unique(labels))
    labels = _renumber(_refine(emb, labels, k))
    if spectral is not None and _cohesion(emb, spectral) > _cohesion(emb, labels):
        return spectral
    return labels


def _cohesion(emb: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine similarity of unit embeddings to their cluster's centroid direction."""
    total = 0.0
    for c in np.unique(labels):
        members = emb[labels == c]
        total += float(np.linalg.norm(members.sum(axis=0)))  # = sum of cosines to the mean
    return total / len(emb)


def _drop_small(emb: np.ndarray, labels: np.ndarray, min_speakers: int) -> np.ndarray:
    """Fold clusters of fewer than `MIN_CLUSTER_SHARE` of the windows (at least 2) into the
    nearest large cluster: a few odd windows (noise, laughter, overlap) are not a speaker."""
    sizes = np.bincount(labels)
    order = np.argsort(-sizes)
    keep = [c for c in order if sizes[c] >= max(2, MIN_CLUSTER_SHARE * len(labels))]
    keep = keep or [int(order[0])]
    keep = list(dict.fromkeys(keep + [int(c) for c in order[:min_speakers]]))
    if len(keep) == len(sizes):
        return labels
    centroids = np.stack([emb[labels == c].mean(axis=0) for c in keep])
    nearest = np.asarray(keep)[np.argmax(emb @ centroids.T, axis=1)]
    return np.where(np.isin(labels, keep), labels, nearest)


def _spectral(emb: np.ndarray, speakers: int | None, low: int, high: int) -> np.ndarray:
    try:
        from spectralcluster import (
            AutoTune,
            RefinementOptions,
            SpectralClusterer,
            configs,
        )
    except ImportError as exc:
        raise ImportError("spectral clustering needs spectralcluster: "
                          "pip install 'harken[diarize]'") from exc
    refinement = RefinementOptions(gaussian_blur_sigma=1, p_percentile=0.95,
                                   thresholding_soft_multiplier=0.01,
                                   thresholding_type=configs.ThresholdType.RowMax,
                                   refinement_sequence=configs.ICASSP2018_REFINEMENT_SEQUENCE)
    clusterer = SpectralClusterer(
        min_clusters=speakers or low, max_clusters=speakers or high,
        refinement_options=refinement, custom_dist="cosine",
        autotune=AutoTune(p_percentile_min=0.6, p_percentile_max=0.95, init_search_step=0.05,
                          search_level=1))
    return np.asarray(clusterer.predict(emb), np.int64)


def _merge_close(emb: np.ndarray, labels: np.ndarray, min_speakers: int) -> np.ndarray:
    """Join the two clusters with the closest centroids while they are nearer than
    `MERGE_DISTANCE` (centroids average out the noise of single windows, so this catches one
    voice split in two that average linkage keeps apart)."""
    labels = labels.copy()
    while True:
        present = np.unique(labels)
        if len(present) <= max(1, min_speakers):
            return labels
        centroids = np.stack([emb[labels == c].mean(axis=0) for c in present])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        distance = 1 - centroids @ centroids.T
        np.fill_diagonal(distance, np.inf)
        i, j = np.unravel_index(int(np.argmin(distance)), distance.shape)
        if distance[i, j] >= MERGE_DISTANCE:
            return labels
        labels[labels == present[j]] = present[i]


def _refine(emb: np.ndarray, labels: np.ndarray, k: int, rounds: int = 3) -> np.ndarray:
    """A few k-means steps (cosine) from the agglomerative partition; keeps k clusters."""
    for _ in range(rounds):
        present = np.unique(labels)
        centroids = np.stack([emb[labels == c].mean(axis=0) for c in present])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        new = present[np.argmax(emb @ centroids.T, axis=1)]
        if len(np.unique(new)) < len(present) or np.array_equal(new, labels):
            break
        labels = new
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for value in labels.tolist():
        order.setdefault(value, len(order))
    return np.asarray([order[v] for v in labels.tolist()], np.int64)


def speaker_label(index: int) -> str:
    """Speaker names as users read them: S1, S2, ..."""
    return f"S{index + 1}"


# --- offline diarization -------------------------------------------------------------------------

def _windows(segments: Sequence[tuple[float, float]], window: float, hop: float
             ) -> list[tuple[float, float]]:
    """Sliding (start, end) windows inside each speech segment; a short segment is one window."""
    out: list[tuple[float, float]] = []
    for start, end in segments:
        if end - start < MIN_SPEECH_SECONDS:
            continue
        if end - start <= window:
            out.append((start, end))
            continue
        count = int(np.ceil((end - start - window) / hop)) + 1
        step = (end - start - window) / (count - 1)
        out.extend((start + i * step, start + i * step + window) for i in range(count))
    return out


def diarize(audio: Any, options: DiarizeOptions | None = None, *, encoder: Any = None,
            **overrides: Any) -> Diarization:
    """Who spoke when in one input (path, bytes, array at 16 kHz, ...): a `Diarization`.

    `options` (or keyword arguments for `DiarizeOptions`) set the speaker count and windows;
    `encoder` is a loaded `SpeakerEncoder` (default: `options.encoder` or the bundled one)."""

    options = _options(options, overrides)
    wave = load_audio(audio, SAMPLE_RATE)
    encoder = encoder or _encoder(options)
    duration = len(wave) / SAMPLE_RATE
    windows, embeddings = embed_speech(wave, encoder, options)
    return windows_to_diarization(windows, embeddings, options, duration)


def _options(options: DiarizeOptions | None, overrides: dict[str, Any]) -> DiarizeOptions:
    from dataclasses import replace

    if options is not None and not isinstance(options, DiarizeOptions):
        raise TypeError(f"options must be DiarizeOptions, got {type(options).__name__}")
    return replace(options or DiarizeOptions(), **overrides) if overrides else (
        options or DiarizeOptions())


_ENCODERS: dict[str | None, Any] = {}


def _encoder(options: DiarizeOptions) -> Any:
    # torch: the speaker encoder runs a network; clustering and labels need none
    from harken.diarization.speakers import load_speaker_encoder

    if options.encoder not in _ENCODERS:
        _ENCODERS[options.encoder] = load_speaker_encoder(options.encoder)
    return _ENCODERS[options.encoder]


def embed_speech(wave: np.ndarray, encoder: Any, options: DiarizeOptions
                 ) -> tuple[list[tuple[float, float]], np.ndarray]:
    """The speech windows of a waveform and their (N, D) embeddings, `chunk_seconds` of audio
    at a time (so features never exist for more than one chunk)."""
    # torch: the speaker encoder runs a network; clustering and labels need none
    from harken.diarization.speakers import MIN_WINDOW_SAMPLES

    chunk = int(options.chunk_seconds * SAMPLE_RATE)
    windows: list[tuple[float, float]] = []
    parts: list[np.ndarray] = []
    for first in range(0, max(1, len(wave)), chunk):
        piece = wave[first: first + chunk]
        if len(piece) == 0:
            break
        offset = first / SAMPLE_RATE
        segments = [(start, start + len(p) / SAMPLE_RATE) for start, p in
                    split_speech(piece, SAMPLE_RATE, max_segment_seconds=options.chunk_seconds,
                                 method=options.vad, padding_ms=50.0)] \
            if len(piece) > 0.5 * SAMPLE_RATE else [(0.0, len(piece) / SAMPLE_RATE)]
        spans = _windows(segments, options.window_seconds, options.hop_seconds)
        if not spans:
            continue
        samples = [(round(s * SAMPLE_RATE), round(e * SAMPLE_RATE)) for s, e in spans]
        samples = [(s, max(e, s + MIN_WINDOW_SAMPLES)) for s, e in samples]
        parts.append(encoder.embed_windows(piece, samples))
        windows.extend((offset + s, offset + e) for s, e in spans)
    dim = encoder.config.embedding_dim
    return windows, (np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))


def windows_to_diarization(windows: Sequence[tuple[float, float]], embeddings: np.ndarray,
                           options: DiarizeOptions, duration: float) -> Diarization:
    """Cluster window embeddings and turn the labelled windows into speaker turns: each stretch
    of speech goes to the window whose centre is nearest."""
    if not windows:
        return Diarization([], duration)
    labels = cluster_embeddings(embeddings, options.speakers, min_speakers=options.min_speakers,
                                max_speakers=options.max_speakers, threshold=options.threshold,
                                method=options.clustering)
    labels = _renumber(_smooth(labels, windows, options.smoothing))  # S1 speaks first
    turns: list[SpeakerTurn] = []
    centres = [(s + e) / 2 for s, e in windows]
    for i, (start, end) in enumerate(windows):
        # this window owns the time nearer its centre than its neighbours' (within its span)
        lo = start if i == 0 or windows[i - 1][1] < start else max(start, (centres[i - 1]
                                                                          + centres[i]) / 2)
        hi = end if i + 1 == len(windows) or windows[i + 1][0] > end else min(
            end, (centres[i] + centres[i + 1]) / 2)
        speaker = speaker_label(int(labels[i]))
        if turns and turns[-1].speaker == speaker and lo - turns[-1].end < 0.5:
            turns[-1].end = max(turns[-1].end, hi)
        elif hi > lo:
            turns.append(SpeakerTurn(round(lo, 3), round(hi, 3), speaker))
    for turn in turns:
        turn.start, turn.end = round(turn.start, 3), round(turn.end, 3)
    return Diarization(turns, duration)


def _smooth(labels: np.ndarray, windows: Sequence[tuple[float, float]], width: int) -> np.ndarray:
    """Majority vote over `width` neighbouring windows of the same speech stretch."""
    if width <= 1 or len(labels) < 3:
        return labels
    half = width // 2
    out = labels.copy()
    for i in range(len(labels)):
        lo, hi = i, i
        while lo > 0 and i - lo < half and windows[lo - 1][1] >= windows[lo][0]:
            lo -= 1
        while hi + 1 < len(labels) and hi - i < half and windows[hi + 1][0] <= windows[hi][1]:
            hi += 1
        values, counts = np.unique(labels[lo: hi + 1], return_counts=True)
        if counts.max() > (hi - lo + 1) // 2:
            out[i] = values[np.argmax(counts)]
    return out


# --- words and segments --------------------------------------------------------------------------

def assign_speakers(transcript: Any, diarization: Diarization) -> Any:
    """Label each word of `transcript` with the speaker covering most of it, and cut its
    segments where the speaker changes (each new segment has one speaker). Changes the
    transcript in place and returns it."""

    for word in transcript.words:
        word.speaker = diarization.speaker_at(word.start, word.end)
    source = transcript.segments or ([Segment(transcript.text, 0.0, transcript.duration,
                                              list(transcript.words))]
                                     if transcript.words else [])
    segments: list[Any] = []
    for segment in source:
        if not segment.words:
            segment.speaker = diarization.speaker_at(segment.start, segment.end)
            segments.append(segment)
            continue
        for word in segment.words:
            if word.speaker is None:
                word.speaker = diarization.speaker_at(word.start, word.end)
        runs: list[list[Any]] = []
        for word in segment.words:
            if runs and runs[-1][-1].speaker == word.speaker:
                runs[-1].append(word)
            else:
                runs.append([word])
        for i, run in enumerate(runs):
            start = segment.start if i == 0 else run[0].start
            end = segment.end if i + 1 == len(runs) else run[-1].end
            segments.append(Segment(" ".join(w.word for w in run), start, end, run,
                                    speaker=run[0].speaker))
    transcript.segments = segments
    transcript.speaker_turns = list(diarization.turns)
    return transcript


def speaker_turn_text(transcript: Any) -> str:
    """Plain text with one line per speaker turn: ``[S1] words ...``."""
    lines: list[str] = []
    current: str | None = None
    for segment in transcript.segments:
        text = segment.text.strip()
        if not text:
            continue
        if lines and segment.speaker == current:
            lines[-1] += " " + text
        else:
            lines.append(f"[{segment.speaker or '?'}] {text}")
            current = segment.speaker
    return "\n".join(lines)


# --- streams -------------------------------------------------------------------------------------

class OnlineDiarizer:
    """Labels utterances of a stream as they end: an utterance goes to the speaker whose
    centroid is nearest (cosine) if closer than `threshold`, else to a new speaker (until
    `max_speakers`); a label, once given, keeps its speaker for the whole stream.

    `label(audio)` -> "S1", "S2", ...; state is the centroids, a few vectors per speaker."""

    def __init__(self, encoder: Any = None, threshold: float = DEFAULT_THRESHOLD,
                 max_speakers: int = DEFAULT_MAX_SPEAKERS, window_seconds: float = 1.5,
                 hop_seconds: float = 0.75) -> None:
        DiarizeOptions(max_speakers=max_speakers, threshold=threshold,
                       window_seconds=window_seconds, hop_seconds=hop_seconds)  # validates
        self.encoder = encoder or _encoder(DiarizeOptions())
        self.threshold, self.max_speakers = threshold, max_speakers
        self.window_seconds, self.hop_seconds = window_seconds, hop_seconds
        self.sums: list[np.ndarray] = []

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """The mean unit embedding of an utterance's windows (None: too short to tell)."""
        # torch: the speaker encoder runs a network; clustering and labels need none
        from harken.diarization.speakers import MIN_WINDOW_SAMPLES

        audio = np.asarray(audio, np.float32)
        if len(audio) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
            return None
        spans = _windows([(0.0, len(audio) / SAMPLE_RATE)], self.window_seconds,
                         self.hop_seconds)
        samples = [(round(s * SAMPLE_RATE),
                    max(round(e * SAMPLE_RATE), round(s * SAMPLE_RATE) + MIN_WINDOW_SAMPLES))
                   for s, e in spans]
        mean = self.encoder.embed_windows(audio, samples).mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def label(self, audio: np.ndarray) -> str | None:
        """The speaker of one finished utterance (16 kHz float32); None if it is too short."""
        emb = self.embed(audio)
        if emb is None:
            return None
        return speaker_label(self.assign(emb))

    def assign(self, emb: np.ndarray) -> int:
        """The index of the speaker an embedding goes to (the centroid is updated)."""
        if self.sums:
            centroids = np.stack([s / max(float(np.linalg.norm(s)), 1e-12) for s in self.sums])
            similarity = centroids @ emb
            best = int(np.argmax(similarity))
            if 1 - similarity[best] < self.threshold or len(self.sums) >= self.max_speakers:
                self.sums[best] = self.sums[best] + emb
                return best
        self.sums.append(emb.astype(np.float64))
        return len(self.sums) - 1


def diarize_segments(model: Any, audio: Any, options: DiarizeOptions | None = None,
                     decode_options: Any = None, **kwargs: Any) -> Iterable[Any]:
    """`Model.iter_segments` with speakers: the speaker turns of the whole input are found
    first (embeddings only, `chunk_seconds` of audio at a time), then segments are decoded
    lazily and each is cut and labelled as it comes."""

    wave = load_audio(audio, SAMPLE_RATE)
    diarization = diarize(wave, options)
    for segment in model.iter_segments(wave, decode_options, **kwargs):
        part = Transcript(segment.text, list(segment.words), [segment])
        yield from assign_speakers(part, diarization).segments


def transcript_turns(transcript: Any) -> Diarization:
    """The speaker turns of a diarized transcript: those diarization found, or else turns made
    of its segments (adjacent segments of one speaker joined)."""
    if transcript.speaker_turns:
        return Diarization(list(transcript.speaker_turns), transcript.duration)
    turns: list[SpeakerTurn] = []
    for segment in transcript.segments:
        if segment.speaker is None:
            continue
        start = segment.words[0].start if segment.words else segment.start
        end = segment.words[-1].end if segment.words else segment.end
        if turns and turns[-1].speaker == segment.speaker:
            turns[-1].end = round(max(turns[-1].end, end), 3)
        else:
            turns.append(SpeakerTurn(round(start, 3), round(end, 3), segment.speaker))
    return Diarization(turns, transcript.duration)






