"""``shm-comm echo NAME``: print each message of a channel as it arrives."""

from __future__ import annotations

import argparse
import json
import math
import pprint
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import layout as L
from ..arrays import decode_array
from ..errors import SHMFormatError, SHMSerializationError
from ..serialization import get_serializer
from ._common import (
    Commands,
    add_command,
    add_json_option,
    add_wait_option,
    attach_observer,
    receive,
)
from ._format import format_age, format_bytes, to_json, write_line

__all__ = ["Decoded", "add_parser", "decode_message", "describe_array", "format_hex",
           "format_value", "run", "summarize_array"]


ARRAY_VALUES_SHOWN = 8  # arrays up to this many elements are printed in full
TEXT_LIMIT = 2000  # characters of one echoed value before it is cut (--full: no cut)


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _scalar(value: Any) -> Any:
    """A NumPy scalar as a plain Python value, non-finite floats as strings (valid JSON)."""
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, float):
        return _finite(item)
    if isinstance(item, complex):
        return str(item)
    if isinstance(item, bytes):
        return item.hex()
    if isinstance(item, (int, str, bool)) or item is None:
        return item
    return str(item)


def _short(value: float, dtype: np.dtype[Any]) -> str:
    # Seven significant digits (all a float32 holds); float64 keeps six decimals of large
    # values too, so epoch timestamps show their microseconds.
    digits = 7
    if dtype.kind == "f" and dtype.itemsize >= 8 and value and math.isfinite(value):
        digits = min(16, max(7, int(math.log10(abs(value))) + 7))
    return f"{value:.{digits}g}"


def _at_precision(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """float16/float32 values as the float64 nearest to their shortest decimal form, so that
    they print with the digits the dtype holds (``0.05219843``, not ``0.05219842866063118``)
    and still read back to the same float32."""
    if arr.dtype.kind != "f" or arr.dtype.itemsize >= 8:
        return arr
    flat = [float(str(value)) for value in arr.flat]  # str of a float32: shortest digits
    return np.array(flat, dtype=np.float64).reshape(arr.shape)


def summarize_array(arr: np.ndarray[Any, Any], full: bool = False) -> dict[str, Any]:
    """A small description of ``arr``: dtype, shape and either its values or statistics.

    Numbers get min/max/mean (NaNs ignored and counted), booleans a count of True, other
    dtypes their first values; structured dtypes one summary per field. ``full`` includes
    every value. Works on arrays of any size in one pass per statistic, without warnings.
    """
    out: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    if arr.dtype.names:
        out["fields"] = {name: summarize_array(arr[name], full) for name in arr.dtype.names}
        return out
    if full or arr.size <= ARRAY_VALUES_SHOWN:
        out["values"] = _jsonable(_at_precision(arr).tolist())
        return out
    kind = arr.dtype.kind
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if kind == "b":
            out["true"] = int(np.count_nonzero(arr))
        elif kind in "iu":
            out.update(min=int(arr.min()), max=int(arr.max()), mean=_finite(float(arr.mean())))
        elif kind == "f":
            nans = int(np.count_nonzero(np.isnan(arr)))
            if nans < arr.size:
                out.update(min=_finite(float(np.nanmin(arr))), max=_finite(float(np.nanmax(arr))),
                           mean=_finite(float(np.nanmean(arr))))
            if nans:
                out["nan"] = nans
        else:
            out["head"] = [_scalar(v) for v in arr.reshape(-1)[:ARRAY_VALUES_SHOWN // 2]]
    return out


def describe_array(arr: np.ndarray[Any, Any], full: bool = False) -> list[str]:
    """Human lines for :func:`summarize_array`: ``uint8 (480, 640, 3)  min 0  max 255...``."""
    return _describe_summary(summarize_array(arr, full), arr.dtype, "", "")


def _describe_summary(summary: dict[str, Any], dtype: np.dtype[Any], label: str,
                      indent: str) -> list[str]:
    shape = "(" + ", ".join(str(d) for d in summary["shape"]) + ("," if len(
        summary["shape"]) == 1 else "") + ")"
    if "fields" in summary:
        lines = [f"{label}struct {shape}  fields: {', '.join(summary['fields'])}"]
        assert dtype.fields is not None
        for name, sub in summary["fields"].items():
            lines.extend(_describe_summary(sub, dtype.fields[name][0], f"{indent}  {name}: ",
                                           indent + "  "))
        return lines
    head = f"{label}{summary['dtype']} {shape}"
    if "values" in summary:
        return [f"{head}  {json.dumps(summary['values'])}"]
    parts = [head]
    for key in ("min", "max", "mean"):
        if key in summary:
            value = summary[key]
            shown = _short(value, dtype.base) if isinstance(value, float) else value
            parts.append(f"{key} {shown}")
    if "nan" in summary:
        parts.append(f"nan {summary['nan']}")
    if "true" in summary:
        parts.append(f"true {summary['true']}")
    if "head" in summary:
        parts.append("first " + ", ".join(str(v) for v in summary["head"]) + ", ...")
    return ["  ".join(parts)]


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-compatible data: arrays summarized, bytes as hex, others as repr."""
    if depth > 50:
        return repr(value)
    if isinstance(value, np.ndarray):
        return {"ndarray": summarize_array(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"bytes": len(data), "hex": data[:64].hex()}
    if isinstance(value, (np.generic, int, float, complex, str, bool)) or value is None:
        return _scalar(value)
    return repr(value)


def format_hex(data: bytes, limit: int) -> str:
    """Bytes as spaced hex, at most ``limit`` of them (0: all), noting how many were left."""
    shown = data if limit <= 0 else data[:limit]
    text = shown.hex(" ")
    if len(shown) < len(data):
        text += f" ... (+{len(data) - len(shown)} bytes)"
    return text


@dataclass
class Decoded:
    """One message as echo shows it: ``text`` lines for people, ``value`` for JSON."""

    text: list[str]
    value: Any


def decode_message(data: bytes, encoding: int, raw: bool, full: bool,
                   max_bytes: int) -> Decoded:
    """Decode ``data`` by its encoding (pickle, msgpack, typed array, raw bytes).

    ``raw`` skips decoding and shows the bytes. A message that cannot be decoded is shown
    as bytes with the reason, never raised: echo keeps going.
    """
    if raw or encoding == L.ENCODING_RAW:
        return Decoded([format_hex(data, max_bytes)],
                       {"bytes": len(data), "hex": (data if max_bytes <= 0 else
                                                    data[:max_bytes]).hex()})
    try:
        if encoding == L.ENCODING_ARRAY:
            arr, _header = decode_array(data)
            return Decoded(describe_array(arr, full), {"ndarray": summarize_array(arr, full)})
        name = L.ENCODING_NAMES.get(encoding)
        if name is None:
            raise SHMSerializationError(f"unknown encoding {encoding}")
        try:
            serializer = get_serializer(name)
        except ValueError as exc:  # msgpack not installed
            raise SHMSerializationError(str(exc)) from None
        obj = serializer.decode(data, encoding)
    except (SHMSerializationError, SHMFormatError) as exc:
        return Decoded([f"<cannot decode: {exc}>", format_hex(data, max_bytes)],
                       {"error": str(exc), "bytes": len(data), "hex": data[:64].hex()})
    if isinstance(obj, np.ndarray):
        return Decoded(describe_array(obj, full), {"ndarray": summarize_array(obj, full)})
    return Decoded(format_value(obj, full).splitlines(), _jsonable(obj))


def format_value(obj: Any, full: bool = False) -> str:
    """``pprint`` of a decoded message, arrays inside it summarized by NumPy's printoptions.

    Cut to ``TEXT_LIMIT`` characters unless ``full``.
    """
    width = max(40, shutil.get_terminal_size((100, 24)).columns)
    options: dict[str, Any] = ({"threshold": sys.maxsize} if full else
                               {"threshold": 20, "edgeitems": 3, "precision": 6})
    with np.printoptions(**options):
        text = pprint.pformat(obj, width=width, compact=True, sort_dicts=False)
    if not full and len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f" ... (+{len(text) - TEXT_LIMIT} characters; --full shows all)"
    return text


def run(args: argparse.Namespace) -> int:
    """Print each message of a channel as it arrives, without perturbing the channel."""
    sub = attach_observer(args.name, args.timeout, "echo", latest=args.latest)
    with sub:
        shown = 0
        last_seq = None
        while args.count <= 0 or shown < args.count:
            got = receive(sub, None)
            if got is None:
                continue
            data, encoding = got
            now_ns = time.time_ns()
            seq, stamp_ns = sub.last_seq, sub.last_timestamp_ns
            skipped = 0 if last_seq is None or seq <= last_seq else seq - last_seq - 1
            last_seq = seq
            decoded = decode_message(data, encoding, args.raw, args.full, args.max_bytes)
            enc_name = L.ENCODING_NAMES.get(encoding, str(encoding))
            if args.json:
                write_line(to_json({"channel": args.name, "seq": seq, "timestamp": stamp_ns / 1e9,
                                    "age": (now_ns - stamp_ns) / 1e9, "encoding": enc_name,
                                    "size": len(data), "skipped": skipped, "value": decoded.value}))
            else:
                if skipped:
                    write_line(f"... {skipped} message(s) skipped (this watcher fell behind; the "
                               "channel's subscribers are unaffected)")
                write_line(f"#{seq}  stamp {stamp_ns / 1e9:.6f}  age "
                           f"{format_age((now_ns - stamp_ns) / 1e9)}  {enc_name}  "
                           f"{format_bytes(len(data))}")
                for line in decoded.text:
                    write_line(line)
                write_line("---")
            shown += 1
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``echo`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "echo", run, "print messages as they arrive",
        "Print each new message of a pub/sub channel: pickle and msgpack values, "
        "typed arrays as dtype, shape and a summary (all values when small; "
        "per-field for structured dtypes), raw bytes as hex. Attaches as a "
        "read-only observer: the channel's subscribers and drop count are "
        "unaffected. Note that decoding pickle runs code chosen by whoever can "
        "write the channel; use --raw for channels you do not trust.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N messages (default: run until Ctrl-C)")
    sub.add_argument("--latest", action="store_true",
                     help="start with the newest message already published")
    sub.add_argument("--raw", action="store_true", help="do not decode: show bytes as hex")
    sub.add_argument("--full", action="store_true",
                     help="print whole arrays and long values instead of summaries")
    sub.add_argument("--max-bytes", type=int, default=64, metavar="N",
                     help="hex bytes shown per message (default 64; 0: all)")
    add_wait_option(sub)
    add_json_option(sub, streaming=True)
