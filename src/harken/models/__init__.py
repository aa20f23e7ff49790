"""Acoustic networks and their registry.

    registry.py     architectures by name, a typed config per size, build_model(), shared layers
    deepspeech2.py  conv front end + (bi)GRU/LSTM, streams with a look-ahead
    conformer.py    (chunked) Conformer encoder
    citrinet.py     Citrinet (1D time-channel separable convolutions, squeeze-and-excitation)
    jasper.py       NeMo's Jasper/QuartzNet ConvASR
    wav2vec2.py     wav2vec 2.0 / HuBERT encoders on raw audio
    transducer.py   any encoder + prediction + joint network (RNN-T), hybrid CTC head
    rnnt_loss.py    the RNN-T loss
"""

from harken.models.registry import (Architecture, build_model, config_from_dict, count_parameters,
                                    get_architecture, model_config)

__all__ = ["Architecture", "build_model", "config_from_dict", "count_parameters", "get_architecture",
           "model_config"]
