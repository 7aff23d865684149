"""Every exception type cnnkit raises, in one hierarchy.

``CnnkitError`` is the base: ``except cnnkit.errors.CnnkitError`` catches every error
cnnkit raises on purpose. Each type also derives from the built-in exception a Python
(or PyTorch) user would expect, so existing ``except ValueError`` code keeps working:

    CnnkitError
    +-- ShapeError (ValueError)          a shape does not fit an op or a layer
    |   +-- DimensionError (IndexError)  a dim argument is out of range or repeated
    +-- GradcheckError (AssertionError)  analytic and numeric gradients disagree
    +-- StateDictError (RuntimeError)    load_state_dict: missing, unexpected or misshapen keys
    +-- CheckpointError (ValueError)     a checkpoint file is missing, corrupt, foreign or does not fit
    |   +-- PthError                     ... a PyTorch file the safe reader refuses (unsafe, corrupt, legacy)
    |   +-- WeightsError                 ... weights that cannot be used (source, name, keys or shapes)
    +-- DataError (ValueError)           a dataset file or sample is unreadable or malformed
    |   +-- IDXError                     ... an IDX (MNIST) file
    |   +-- CIFARError                   ... a CIFAR-10 binary batch
    +-- DownloadError (OSError)          a download failed or its checksum did not match
    +-- ConversionError (ValueError)     a model cannot be rewritten (fully convolutional conversion, batch-norm folding)
    +-- InferenceOnlyError (RuntimeError)  a layer with weights frozen for inference run in training mode (names it)
    +-- LayerNotFoundError (ValueError)  no layer of that name (the message lists the names there are)
    +-- NonFiniteError (FloatingPointError)  training produced NaN or Inf (names the layer)
    +-- UsageError (ValueError)          command-line arguments that do not make sense (the CLI's one class)
    +-- RunFolderError (OSError)         a run folder cannot be used: another run holds it, not writable, full
    +-- OptionalDependencyError (ImportError)  an extra (cnnkit[onnx], ...) is not installed
    +-- OnnxError (ValueError)           ONNX export or import (cnnkit.onnx)
        +-- OnnxFileError                ... a file that is not a readable ONNX model (names the file)
        +-- OnnxUnsupportedError         ... a node cnnkit cannot run (names operator, node, opset)
        +-- OnnxExportError              ... a model ONNX cannot express (names the layer)
    +-- DistributedError (RuntimeError)  data-parallel training over MPI: ranks disagree, MPI missing or failing
        +-- MPIUnavailableError (also OptionalDependencyError)  mpi4py / mpiexec missing (names the package)
    +-- NeuronError (ValueError)         an index that is not an element of a layer's output
    +-- ExploreError (ValueError)        a request the explorer's page cannot answer (with its HTTP status)

Messages name the op, layer, file or option, what was expected and what was received.

Outside the hierarchy: ``Terminated`` (KeyboardInterrupt), SIGTERM raised where the program
is, so that what stops on Ctrl-C (``cnnkit train`` saving its state) stops on SIGTERM too;
and ``raise_from_signal``, how cnnkit's signal handlers raise either of them without losing
one that arrives inside a finalizer.
"""

from __future__ import annotations

import os
import threading
import weakref

__all__ = [
    "CnnkitError",
    "Terminated",
    "ShapeError",
    "DimensionError",
    "GradcheckError",
    "StateDictError",
    "CheckpointError",
    "PthError",
    "WeightsError",
    "DataError",
    "IDXError",
    "CIFARError",
    "DownloadError",
    "ConversionError",
    "InferenceOnlyError",
    "LayerNotFoundError",
    "NonFiniteError",
    "UsageError",
    "RunFolderError",
    "OptionalDependencyError",
    "OnnxError",
    "OnnxFileError",
    "OnnxUnsupportedError",
    "OnnxExportError",
    "DistributedError",
    "MPIUnavailableError",
    "NeuronError",
    "ExploreError",
]


class CnnkitError(Exception):
    """The base of every exception cnnkit raises on purpose."""


class ShapeError(CnnkitError, ValueError):
    """An input's shape (or a shape-like argument) does not fit the op or layer.

    The message names the op or layer, what it expected and what it received.
    """


class DimensionError(ShapeError, IndexError):
    """A ``dim`` argument is out of range for the input's number of dimensions, or repeated.

    Also an ``IndexError``, the type PyTorch raises for a dimension out of range.
    """


class GradcheckError(CnnkitError, AssertionError):
    """Analytic and finite-difference gradients disagree (raised by ``cnnkit.gradcheck``)."""


class StateDictError(CnnkitError, RuntimeError):
    """A state dict does not fit the model: missing or unexpected keys, wrong shapes or bad values.

    RuntimeError, as PyTorch's ``load_state_dict`` raises.

    Attributes:
        missing_keys, unexpected_keys: lists of keys.
        mismatched: list of (key, shape in the state dict, shape in the model).
        invalid: list of (key, reason): a wrong dtype or non-finite values.
    """

    def __init__(self, model: str, missing: list[str], unexpected: list[str], mismatched: list,
                 invalid: list | tuple = ()):
        self.missing_keys, self.unexpected_keys, self.mismatched = missing, unexpected, mismatched
        self.invalid = list(invalid)
        lines = [f"Error(s) in loading state_dict for {model}:"]
        if missing:
            lines.append("  missing key(s): " + ", ".join(missing))
        if unexpected:
            lines.append("  unexpected key(s): " + ", ".join(unexpected))
        for key, got, expected in mismatched:
            lines.append(f"  size mismatch for {key}: the state dict has shape {got}, the model expects {expected}")
        for key, reason in self.invalid:
            lines.append(f"  bad value for {key}: {reason}")
        lines.append("  (nothing was loaded)")
        super().__init__("\n".join(lines))


class CheckpointError(CnnkitError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, foreign or does not fit the model."""


class PthError(CheckpointError):
    """A PyTorch file cnnkit refuses to read: unsafe, corrupt, or not a torch.save archive.

    The message names the file and what was refused (the opcode or global and its byte
    position in ``data.pkl``, the zip member, or the storage that does not fit).
    """


class WeightsError(CheckpointError):
    """Weights that cannot be used: unreadable source, unknown name, or keys/shapes that do not fit.

    The message names the source and lists every missing, unexpected and mismatched key.
    """


class DataError(CnnkitError, ValueError):
    """A dataset file or sample is unreadable or malformed (the message names the file)."""


class IDXError(DataError):
    """An IDX file (MNIST's format) is malformed or truncated."""


class CIFARError(DataError):
    """A CIFAR-10 binary batch file is malformed or truncated."""


class DownloadError(CnnkitError, OSError):
    """A download failed, or the file's checksum does not match the expected one."""


class ConversionError(CnnkitError, ValueError):
    """A model (or one of its layers) cannot be rewritten: fully convolutional conversion, batch-norm folding."""


class InferenceOnlyError(CnnkitError, RuntimeError):
    """A layer whose weights were frozen for inference (``surgery.optimize_for_inference``) was run
    in training mode; the message names the layer."""


class LayerNotFoundError(CnnkitError, ValueError):
    """A layer name that is not in the model; the message lists the names there are."""


class NonFiniteError(CnnkitError, FloatingPointError):
    """Training produced NaN or Inf; the message names the first layer where it appeared."""


class UsageError(CnnkitError, ValueError):
    """Command-line arguments that do not make sense (alone or together): one line, exit status 2."""


class RunFolderError(CnnkitError, OSError):
    """A run folder cannot be used: another run trains into it, it is not writable or has no room."""


class OptionalDependencyError(CnnkitError, ImportError):
    """A feature needs an optional dependency that is not installed; the message says what to install."""


class OnnxError(CnnkitError, ValueError):
    """ONNX export or import failed (``cnnkit.onnx``); the base of the three below."""


class OnnxFileError(OnnxError):
    """A file is not a readable ONNX model: not ONNX, truncated, inconsistent, too large.

    The message names the file and what is wrong with it. Nothing in the file has run.
    """


class OnnxUnsupportedError(OnnxError):
    """An ONNX node cnnkit cannot run: the message names the operator, the node and the opset."""


class OnnxExportError(OnnxError):
    """A cnnkit model cannot be written as ONNX: the message names the layer and the op."""


class NeuronError(CnnkitError, ValueError):
    """An index that does not address an element of a layer's output (the message gives its shape)."""


class ExploreError(CnnkitError, ValueError):
    """A request the explorer cannot answer; ``status`` is the HTTP status it maps to (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class DistributedError(CnnkitError, RuntimeError):
    """Data-parallel training over MPI failed; the message names the ranks involved.

    Raised when ranks disagree on the model or the data, a rank failed, or MPI reported an error.
    """


class MPIUnavailableError(DistributedError, OptionalDependencyError):
    """MPI is not installed; the message says which package to install.

    Training on several processes needs mpi4py and an MPI (the ``mpich`` wheel provides
    ``mpiexec``): ``pip install "cnnkit[mpi]"``.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so ``cnnkit train`` saves its state as for Ctrl-C.

    The command-line handler raises it in one process; on the ranks of a job every rank
    raises it at the same point (``distributed/stop.py``). Exit status 143.
    """


_FINALIZE_CALL = weakref.finalize.__call__.__code__
_RESEND_DELAY = 0.001  # seconds: the finalizer (a pooled array's __del__ takes ~2 us) is over by then


def raise_from_signal(interrupt: BaseException, signum: int, frame) -> None:
    """Raise ``interrupt`` from the handler of signal ``signum``; inside a finalizer, just after it.

    Python prints and drops an exception raised in a finalizer ("Exception ignored in"), and
    ``__del__`` runs wherever an object's last reference goes: cnnkit's pooled arrays give
    their memory back from one (``backend/buffers.py``), thousands of times a training step.
    A Ctrl-C or SIGTERM handled there and raised at once would be lost, and the training
    would go on to its end (exit 0, nothing saved as interrupted). So when ``frame`` (the
    frame the signal found, passed to every handler) is inside a ``__del__`` or a
    ``weakref.finalize`` callback, the signal is sent again 1 ms later from a helper thread
    (sending it from the handler would run the handler again at once, still inside), and the
    handler raises when it finds ordinary code.
    """
    if _in_finalizer(frame):
        resend = threading.Timer(_RESEND_DELAY, os.kill, (os.getpid(), signum))
        resend.daemon = True
        resend.start()
        return
    raise interrupt


def _in_finalizer(frame) -> bool:
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code is _FINALIZE_CALL:
            return True
        frame = frame.f_back
    return False
