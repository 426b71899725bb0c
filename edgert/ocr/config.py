"""The two EXTRA sections of an OCR bundle: `ocr/config` (JSON) and `ocr/keys` (the dictionary).

Both are written by `converters/ocr_bundle.py` and validated here before a pipeline is built: every
field's type and range is checked and any problem is a `PackageError` naming the file, the section
and the field (a hostile package can carry valid hashes, so the reader's checks are not enough).

Defaults are RapidOCR's (rapidocr-onnxruntime 1.4.4 `config.yaml`): det short side 736
(`limit_type: min`), DB thresh 0.3 / box_thresh 0.5 / unclip 1.6 / dilation / fast score, at most
1000 candidates; cls 3x48x192, batch 6, rotate at score 0.9; rec 3x48x320, batch 6; text_score 0.5;
and its page-level guards (`max_side_len` 2000, `min_side_len` 30, letterbox under `min_height` 30
or past `width_height_ratio` 8).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgert.errors import PackageError

CONFIG_SECTION = "ocr/config"
KEYS_SECTION = "ocr/keys"
GRAPH_NAMES = ("det", "cls", "rec")
CONFIG_VERSION = 1

MAX_CONFIG_BYTES = 64 * 1024
MAX_KEYS_BYTES = 4 * 1024 * 1024
MAX_KEYS = 65536             # PP-OCRv4 rec's dictionary holds 6623 entries; room for larger ones
MAX_KEY_CHARS = 16           # one character, or a short grapheme cluster


@dataclass
class PageConfig:
    """RapidOCR's `Global` guards, applied to the page before detection."""
    max_side_len: int = 2000            # pages larger than this are shrunk first (multiple of 32)
    min_side_len: int = 30              # ... and smaller ones enlarged
    min_height: int = 30                # pages this short or ...
    width_height_ratio: float = 8.0     # ... this wide get a black letterbox (-1: never)


@dataclass
class DetConfig:
    limit_side_len: int = 736
    limit_type: str = "min"             # "min": short side >= limit; "max": long side <= limit
    thresh: float = 0.3                 # probability -> text mask
    box_thresh: float = 0.5             # mean probability inside a box to keep it
    max_candidates: int = 1000
    unclip_ratio: float = 1.6
    use_dilation: bool = True           # 2x2 dilation of the mask
    score_mode: str = "fast"            # "fast": score over the box; "slow": over the contour


@dataclass
class ClsConfig:
    enabled: bool = True
    image_shape: tuple[int, int, int] = (3, 48, 192)
    batch: int = 6
    thresh: float = 0.9                 # rotate when the label is "180" with a score above this
    labels: tuple[str, ...] = ("0", "180")


@dataclass
class RecConfig:
    image_shape: tuple[int, int, int] = (3, 48, 320)   # width = the minimum batch width
    batch: int = 6
    max_width: int = 4800               # batch width cap (RapidOCR has none; 100x the height)
    text_score: float = 0.5             # lines below this mean character score are dropped
    use_space_char: bool = True         # the class after the dictionary is " " (PaddleOCR)


@dataclass
class OcrConfig:
    page: PageConfig = field(default_factory=PageConfig)
    det: DetConfig = field(default_factory=DetConfig)
    cls: ClsConfig = field(default_factory=ClsConfig)
    rec: RecConfig = field(default_factory=RecConfig)
    version: int = CONFIG_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for sec in ("cls", "rec"):
            d[sec] = {k: list(v) if isinstance(v, tuple) else v for k, v in d[sec].items()}
        return d

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False).encode("utf-8")

    def validate(self, where: str = "ocr/config") -> "OcrConfig":
        """Check every field (also used by the converter before it writes anything)."""
        parse_config(self.to_bytes(), where)
        return self


# -- validation -----------------------------------------------------------------------------------

# field -> (kind, lo, hi) or (kind, choices); ints are never bools, floats must be finite
_INT, _FLOAT, _BOOL, _CHOICE, _SHAPE, _LABELS = "int", "float", "bool", "choice", "shape", "labels"
_RULES: dict[str, dict[str, tuple]] = {
    "page": {"max_side_len": (_INT, 32, 16384), "min_side_len": (_INT, 1, 4096),
             "min_height": (_INT, 0, 4096), "width_height_ratio": (_FLOAT, -1.0, 1000.0)},
    "det": {"limit_side_len": (_INT, 32, 8192), "limit_type": (_CHOICE, ("min", "max")),
            "thresh": (_FLOAT, 0.0, 1.0), "box_thresh": (_FLOAT, 0.0, 1.0),
            "max_candidates": (_INT, 1, 100000), "unclip_ratio": (_FLOAT, 0.0, 10.0),
            "use_dilation": (_BOOL,), "score_mode": (_CHOICE, ("fast", "slow"))},
    "cls": {"enabled": (_BOOL,), "image_shape": (_SHAPE, 8, 2048), "batch": (_INT, 1, 256),
            "thresh": (_FLOAT, 0.0, 1.0), "labels": (_LABELS, 2, 16)},
    "rec": {"image_shape": (_SHAPE, 8, 2048), "batch": (_INT, 1, 256), "max_width": (_INT, 8, 65536),
            "text_score": (_FLOAT, 0.0, 1.0), "use_space_char": (_BOOL,)},
}
_CLASSES = {"page": PageConfig, "det": DetConfig, "cls": ClsConfig, "rec": RecConfig}


def _bad(where: str, name: str, want: str, got: Any) -> PackageError:
    text = repr(got)
    if len(text) > 60:
        text = text[:57] + "..."
    return PackageError(f"{where}: field {name!r} must be {want}, got {text}")


def _check_value(where: str, name: str, rule: tuple, v: Any) -> Any:
    kind = rule[0]
    if kind == _INT:
        if type(v) is not int or not rule[1] <= v <= rule[2]:
            raise _bad(where, name, f"an integer in [{rule[1]}, {rule[2]}]", v)
        return v
    if kind == _FLOAT:
        if type(v) not in (int, float) or not math.isfinite(v) or not rule[1] <= v <= rule[2]:
            raise _bad(where, name, f"a number in [{rule[1]}, {rule[2]}]", v)
        return float(v)
    if kind == _BOOL:
        if type(v) is not bool:
            raise _bad(where, name, "true or false", v)
        return v
    if kind == _CHOICE:
        if v not in rule[1] or type(v) is not str:
            raise _bad(where, name, f"one of {', '.join(rule[1])}", v)
        return v
    if kind == _SHAPE:
        if (type(v) is not list or len(v) != 3 or any(type(d) is not int for d in v) or v[0] != 3
                or not all(rule[1] <= d <= rule[2] for d in v[1:])):
            raise _bad(where, name, f"[3, H, W] with H, W integers in [{rule[1]}, {rule[2]}]", v)
        return tuple(v)
    if kind == _LABELS:
        if (type(v) is not list or not rule[1] <= len(v) <= rule[2]
                or any(type(s) is not str or not 1 <= len(s) <= 32 for s in v) or len(set(v)) != len(v)):
            raise _bad(where, name, f"a list of {rule[1]}..{rule[2]} distinct short strings", v)
        return tuple(v)
    raise AssertionError(kind)   # pragma: no cover - a rule table bug


def _strict_json(data: bytes, where: str, cap: int) -> Any:
    if len(data) > cap:
        raise PackageError(f"{where}: {len(data)} bytes, over the cap {cap}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise PackageError(f"{where}: duplicate key {k!r}")
            out[k] = v
        return out

    def no_const(name):
        raise PackageError(f"{where}: {name} is not allowed in JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_const)
    except (ValueError, RecursionError) as e:
        raise PackageError(f"{where}: not valid JSON ({str(e)[:80]})") from None


def parse_config(data: bytes | memoryview, where: str = CONFIG_SECTION) -> OcrConfig:
    """`ocr/config` bytes -> OcrConfig; missing fields take their defaults, unknown ones are errors."""
    doc = _strict_json(bytes(data), where, MAX_CONFIG_BYTES)
    if not isinstance(doc, dict):
        raise PackageError(f"{where}: must be a JSON object, got {type(doc).__name__}")
    known = {"version", *_RULES}
    extra = sorted(set(doc) - known)
    if extra:
        raise PackageError(f"{where}: unknown field(s) {', '.join(map(repr, extra))} "
                           f"(known: {', '.join(sorted(known))})")
    version = doc.get("version")
    if type(version) is not int or version != CONFIG_VERSION:
        raise _bad(where, "version", f"{CONFIG_VERSION}", version)
    parts: dict[str, Any] = {}
    for sec, rules in _RULES.items():
        body = doc.get(sec, {})
        if not isinstance(body, dict):
            raise _bad(where, sec, "an object", body)
        extra = sorted(set(body) - set(rules))
        if extra:
            raise PackageError(f"{where}: unknown field(s) {', '.join(f'{sec}.{k}' for k in extra)}")
        values = {k: _check_value(where, f"{sec}.{k}", rules[k], body[k]) for k in rules if k in body}
        parts[sec] = _CLASSES[sec](**values)
    cfg = OcrConfig(**parts)
    # cross-field rules
    if cfg.page.min_side_len > cfg.page.max_side_len:
        raise _bad(where, "page.min_side_len", f"<= page.max_side_len ({cfg.page.max_side_len})",
                   cfg.page.min_side_len)
    if cfg.page.width_height_ratio != -1.0 and cfg.page.width_height_ratio < 1.0:
        raise _bad(where, "page.width_height_ratio", "-1 (off) or a number in [1, 1000]",
                   cfg.page.width_height_ratio)
    if cfg.rec.max_width < cfg.rec.image_shape[2]:
        raise _bad(where, "rec.max_width", f">= rec.image_shape[2] ({cfg.rec.image_shape[2]})",
                   cfg.rec.max_width)
    return cfg


def parse_keys(data: bytes | memoryview, where: str = KEYS_SECTION) -> list[str]:
    """`ocr/keys` bytes (UTF-8, one entry per line, optional final newline) -> the entries."""
    raw = bytes(data)
    if len(raw) > MAX_KEYS_BYTES:
        raise PackageError(f"{where}: {len(raw)} bytes, over the cap {MAX_KEYS_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if text.endswith("\n"):
        text = text[:-1]
    keys = text.split("\n") if text else []
    if not 1 <= len(keys) <= MAX_KEYS:
        raise PackageError(f"{where}: holds {len(keys)} entries; need 1..{MAX_KEYS}")
    for i, k in enumerate(keys):
        if not 1 <= len(k) <= MAX_KEY_CHARS or "\r" in k or "\x00" in k:
            raise PackageError(f"{where}: entry {i} ({k[:20]!r}) must be 1..{MAX_KEY_CHARS} characters "
                               f"without CR or NUL")
    return keys


def keys_to_bytes(keys: list[str], where: str = KEYS_SECTION) -> bytes:
    data = ("\n".join(keys) + "\n").encode("utf-8")
    parse_keys(data, where)        # the writer refuses what the reader would
    return data


def charset(keys: list[str], rec: RecConfig) -> list[str]:
    """CTC classes: blank at 0 (decoded as nothing), the dictionary, then " " (PaddleOCR's
    `use_space_char`; RapidOCR's CTCLabelDecode appends it the same way)."""
    return ["", *keys] + ([" "] if rec.use_space_char else [])


__all__ = ["CONFIG_SECTION", "KEYS_SECTION", "GRAPH_NAMES", "OcrConfig", "PageConfig", "DetConfig",
           "ClsConfig", "RecConfig", "parse_config", "parse_keys", "keys_to_bytes", "charset"]
