"""ONNX Runtime sessions, created one way by every caller (service, batch scoring, export checks).

- Telemetry off: ONNX Runtime otherwise writes a device id and an event database under the
  user's cache directory (``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``) as soon as it is
  imported. Only the environment variable, set before the first import, prevents that, so this
  module sets it (unless the deployment already chose) and is the one place that imports
  ONNX Runtime; the container images set it too.
- One intra-op and one inter-op thread: the service runs one worker process per core, and more
  threads per session only add contention.
- The CPU provider, explicitly, so a machine's other providers never change the numbers.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort  # after the telemetry switch above, on purpose


def create_session(model: bytes | str) -> ort.InferenceSession:
    """A session over a serialized graph (bytes) or a file path. ONNX Runtime's own errors for a
    bad graph propagate: callers turn them into their own error with context."""
    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisations
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def runtime_version() -> str:
    """ONNX Runtime's version (recorded with a published model)."""
    return str(ort.__version__)
