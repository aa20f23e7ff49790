"""Any language: the default normaliser, derived alphabets, SentencePiece without spaces, and a
tiny model trained on Spanish speech."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harken.errors import ConfigError
from harken.text import (ENGLISH, CharTokenizer, TextNormalizer, derive_alphabet, load_tokenizer,
                         normalize_basic, normalize_text, save_tokenizer, train_sentencepiece)
from harken.training.loop import build_tokenizer
from harken.training.config import config_from_dict

from conftest import have_espeak, speak


@pytest.mark.parametrize("text, expected", [
    ("¡Hola, Señor Muñoz! ¿Qué tal?", "hola señor muñoz qué tal"),
    ("Straße, Øresund; Łódź", "straße øresund łódź"),  # letters stay letters (no ASCII folding)
    ("Привет, мир! Ёлка.", "привет мир ёлка"),
    ("क्षत्रिय, नमस्ते।", "क्षत्रिय नमस्ते"),  # combining marks kept, the danda is punctuation
    ("東京へ、行きます。", "東京へ 行きます"),
    ("l’été — c'est 'bien'", "l'été c'est bien"),  # apostrophes only inside words
    ("Cafe\u0301 2024", "café 2024"),  # NFC; digits are kept as digits
])
def test_default_normaliser_keeps_every_script(text, expected):
    assert normalize_basic(text) == expected
    assert TextNormalizer("es")(text) == expected


def test_casing_and_kept_punctuation_are_settings():
    keep = TextNormalizer("de", lowercase=False, keep_punctuation="-?")
    assert keep("Wie geht's, Hans-Peter?") == "Wie geht's Hans-Peter?"
    assert TextNormalizer("und")("Don't PANIC, 42!") == "don't panic 42"  # no English rules
    assert TextNormalizer("en-GB")("Don't PANIC, 42!") == "don't panic forty two"
    assert normalize_text("¡Sí!", "es") == "sí"


def test_normaliser_settings_are_checked():
    with pytest.raises(ConfigError, match="'en' has its own normaliser.*fixed output"):
        TextNormalizer("en", lowercase=False)
    with pytest.raises(ConfigError, match=r"keep_punctuation: \['a'\] are not punctuation"):
        TextNormalizer("es", keep_punctuation="a")
    with pytest.raises(ConfigError, match="expected a language code"):
        TextNormalizer("")


def test_derive_alphabet_counts_and_orders_characters():
    texts = ["mañana sí", "niño", "x"]
    assert derive_alphabet(texts) == " aimnosxíñ"
    assert derive_alphabet(texts, min_count=2) == " anñ"
    with pytest.raises(ValueError, match="no character occurs 5"):
        derive_alphabet(texts, min_count=5)


def test_tokenizer_configs_carry_the_normaliser_and_old_configs_load_as_english(tmp_path):
    spanish = TextNormalizer("es", keep_punctuation="¿?")
    tokenizer = CharTokenizer(" ¿?abcdeñ", spanish)
    config = save_tokenizer(tokenizer, tmp_path)
    assert config == {"kind": "char", "alphabet": " ¿?abcdeñ",
                      "normalizer": {"language": "es", "lowercase": True, "keep_punctuation": "¿?"}}
    again = load_tokenizer(json.loads(json.dumps(config)), tmp_path)
    assert again.normalizer == spanish and again.tokens == tokenizer.tokens
    assert CharTokenizer().to_config() == {"kind": "char", "alphabet": " abcdefghijklmnopqrstuvwxyz'"}
    assert load_tokenizer({"kind": "char", "alphabet": " ab"}, tmp_path).normalizer == ENGLISH
    with pytest.raises(ConfigError, match="normalizer must be a table"):
        load_tokenizer({"kind": "char", "alphabet": " ab", "normalizer": {"lang": "es"}}, tmp_path)


def test_sentencepiece_for_a_language_without_spaces(tmp_path):
    lines = ["東京へ行きます。", "今日は東京へ行きます", "明日は大阪へ行きます。", "大阪は大きい"] * 20
    tokenizer = train_sentencepiece(lines, vocab_size=16, language="ja")
    text = normalize_text("明日は東京へ行きます。", "ja")
    assert text == "明日は東京へ行きます"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert [word for word, _ in tokenizer.split_words(ids)] == [text]  # one "word": score CER
    config = save_tokenizer(tokenizer, tmp_path)
    assert config["normalizer"]["language"] == "ja"
    assert load_tokenizer(config, tmp_path).encode(text) == ids


def _config(manifest: Path, out: Path, **sections) -> object:
    data = {"data": {"train": [str(manifest)], "language": "es"},
            "run": {"out_dir": str(out), "device": "cpu"}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_from_dict(data)


def test_run_derives_its_alphabet_once_and_keeps_it(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{i}.wav", "text": t}) + "\n"
                                for i, t in enumerate(["¡Sí, Señor!", "Adiós."])), encoding="utf-8")
    config = _config(manifest, tmp_path / "run", tokenizer={"alphabet": "auto"})
    (tmp_path / "run").mkdir()
    tokenizer = build_tokenizer(config, tmp_path / "run", rank=0)
    assert tokenizer.alphabet == " adeiorsíñó" and tokenizer.normalizer.language == "es"
    manifest.write_text(json.dumps({"audio": "x.wav", "text": "zzz"}) + "\n")
    assert build_tokenizer(config, tmp_path / "run", rank=0).alphabet == tokenizer.alphabet  # kept
    (tmp_path / "sp").mkdir()
    sp_config = _config(manifest, tmp_path / "sp", tokenizer={"kind": "sentencepiece",
                                                              "vocab_size": 3})
    sp = build_tokenizer(sp_config, tmp_path / "sp", rank=0)
    assert sp.normalizer.language == "es" and (tmp_path / "sp/tokenizer.model").is_file()


def test_language_settings_in_the_training_config_are_checked(tmp_path):
    manifest = tmp_path / "m.jsonl"
    with pytest.raises(ConfigError, match="'en' has its own normaliser"):
        _config(manifest, tmp_path, data={"language": "en", "lowercase": False})
    with pytest.raises(ConfigError, match="tokenizer.min_char_count: must be >= 1"):
        _config(manifest, tmp_path, tokenizer={"min_char_count": 0})
    with pytest.raises(ConfigError, match=r"tokenizer.character_coverage: must be in \(0, 1\]"):
        _config(manifest, tmp_path, tokenizer={"character_coverage": 1.5})


# Spanish phrases as a corpus would write them: capitals, accents, ñ, inverted marks.
SPANISH = ["¡Sí!", "No.", "Mañana.", "El niño.", "¡Adiós, amigo!", "Canción rápida."]


@pytest.mark.slow
def test_tiny_model_learns_spanish_with_letters_outside_a_to_z(tmp_path, capsys):
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (make system-deps installs it)")
    from harken.cli import main as cli_main
    from harken.model import load_model
    from harken.training.loop import train

    from test_engine import tiny_config

    folder = tmp_path / "es"
    folder.mkdir()
    lines = []
    for i, text in enumerate(SPANISH):  # spoken fast: short audio, quick steps
        speak(text, folder / f"utt0_{i}.wav", voice="es", speed=200)
        lines.append(json.dumps({"audio": f"utt0_{i}.wav", "text": text}) + "\n")
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(lines), encoding="utf-8")
    # 200 steps at a higher learning rate than the English tiny models (half their steps).
    config = tiny_config(manifest, tmp_path / "run", "deepspeech2", 200, optim={"lr": 5e-3},
                         data={"language": "es"}, tokenizer={"alphabet": "auto"})
    model = load_model(train(config))
    assert model.tokenizer.alphabet == " acdegilmnoprsáíñó"
    results = model.transcribe_batch([manifest.parent / f"utt0_{i}.wav" for i in range(6)])
    assert [r.text for r in results] == ["sí", "no", "mañana", "el niño", "adiós amigo",
                                         "canción rápida"]
    # Scoring normalises the references ("¡Adiós, amigo!") as training did, from the model.
    capsys.readouterr()
    assert cli_main(["evaluate", str(manifest), "--model", str(model.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wer"] == 0.0 and report["cer"] == 0.0
