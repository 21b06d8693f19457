"""Scalar metrics to stdout, a JSONL file and TensorBoard event files (tensorboardX, no TensorFlow)."""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from flowjax.parallel import is_primary


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


class MetricWriter:
    """Write scalar metrics per step; only process 0 writes, other processes do nothing.

    Args:
      logdir: directory for ``metrics.jsonl`` and TensorBoard event files (``None``: stdout only).
      stdout: print one line per :meth:`write` (to ``stream``, default ``sys.stdout``).
      jsonl: append one JSON object per :meth:`write` to ``logdir/metrics.jsonl``.
      tensorboard: write TensorBoard scalars into ``logdir`` with tensorboardX.
    """

    def __init__(
        self,
        logdir: str | Path | None = None,
        *,
        stdout: bool = True,
        jsonl: bool = True,
        tensorboard: bool = True,
        stream: TextIO | None = None,
    ):
        self.active = is_primary()
        self.logdir = Path(logdir) if logdir is not None else None
        self._stream = stream if stdout else None
        self._stdout = stdout
        self._jsonl = None
        self._tb = None
        if not self.active:
            return
        if self.logdir is not None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            if jsonl:
                self._jsonl = open(self.logdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(logdir=str(self.logdir))

    @property
    def jsonl_path(self) -> Path | None:
        """The JSONL file written (``None`` without one)."""
        return self.logdir / "metrics.jsonl" if self._jsonl is not None else None

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record scalar ``metrics`` at ``step`` (values convertible to float)."""
        if not self.active:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._stdout:
            line = f"step {step}" + "".join(f" | {k} {_fmt(v)}" for k, v in values.items())
            print(line, file=self._stream or sys.stdout, flush=True)
        if self._jsonl is not None:
            record: dict[str, int | float | str] = {"step": int(step)}
            record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=int(step))

    def flush(self) -> None:
        """Push buffered records to disk."""
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the files."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a metrics JSONL file (non-finite values come back as floats)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append({k: float(v) if isinstance(v, str) else v for k, v in rec.items()})
    return out


def read_tensorboard_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars in the TensorBoard event files under ``logdir``: tag -> [(step, value), ...].

    Reads the TFRecord framing itself (checking both CRCs) and parses ``Event`` protos with
    tensorboardX's bindings, so neither TensorFlow nor TensorBoard is needed.

    Raises:
      ValueError: a record is truncated or fails its checksum.
    """
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            if pos + 12 > len(data):
                raise ValueError(f"{path}: truncated record header at byte {pos}")
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (hcrc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            body = data[pos + 12 : pos + 12 + length]
            if hcrc != masked_crc32c(header) or pos + 16 + length > len(data):
                raise ValueError(f"{path}: corrupt or truncated record at byte {pos}")
            (bcrc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
            if bcrc != masked_crc32c(body):
                raise ValueError(f"{path}: record checksum mismatch at byte {pos}")
            pos += 16 + length
            event = event_pb2.Event.FromString(body)
            if event.HasField("summary"):
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        out.setdefault(value.tag, []).append((int(event.step), value.simple_value))
    return out
