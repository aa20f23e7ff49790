"""What a request may fail with (`RequestError`: an HTTP status and a JSON error) and reading
uploaded audio, shared by the server's endpoints."""

from __future__ import annotations

import io

import numpy as np

from harken.audio import load_audio


class RequestError(Exception):
    """A request that cannot be served: answered with `status` and a JSON error."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def load_upload(data: bytes, filename: str, sample_rate: int) -> np.ndarray:
    upload = io.BytesIO(data)
    upload.name = filename  # AudioError messages name the uploaded file
    return load_audio(upload, sample_rate)
