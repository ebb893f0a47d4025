"""Checks of a saved model's directory, made before any model is built from it.

transformers builds a model from ``config.json`` first and reads the weights into it after, so
a broken directory costs the memory of the model it describes, not of the files on disk: a
missing ``config.json`` builds a default-size YOLOS (100M parameters, 1.2 s) before failing,
weights that do not fit the config fail only once the config's model exists, and caikit tries
every failed load three times per request. Everything checked here is read from the files'
own descriptions (the config, the safetensors header) and the shapes of the model the config
would build, made on torch's meta device, which allocates no memory.

The link checks keep the promise of the models directory finder: a model directory lies inside
``models/``, and so does every file read from it, links resolved.

Nothing here knows caikit; every problem is a short sentence that names files relative to the
model directory, fit to be shown to a client.
"""

# Standard
from collections import OrderedDict
from typing import Dict, Iterator, Optional, Tuple, Type
import json
import math
import os
import struct
import threading

# Third Party
from transformers import PreTrainedModel
from transformers.utils import CONFIG_NAME, IMAGE_PROCESSOR_NAME, SAFE_WEIGHTS_NAME
import torch

# Local
from .guards.paths import client_safe, is_inside
from .memory import return_freed_memory

# Bytes per element of each safetensors dtype (the format's spec: huggingface/safetensors).
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# safetensors itself refuses a header longer than this; reading one costs at most this much.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
# Model directories whose failed load is remembered; the oldest is forgotten beyond this.
MAX_REMEMBERED_FAILURES = 256


class ModelFilesProblem(Exception):
    """A model directory that cannot be served, and why (relative names only).

    Not a ValueError: the checks catch ValueErrors of the parsers they call, never their own.
    """


def links_problem(model_dir: str) -> Optional[str]:
    """Why a link inside ``model_dir`` leads out of it, or None.

    Every entry is resolved, not only the files a load reads today: transformers looks files up
    by name, and a version that reads one more would otherwise follow its link out of
    ``models/``.
    """
    for relative, path in _entries(model_dir):
        if relative and not is_inside(path, model_dir):
            return f"{relative} is a link that leads outside the model directory"
    return None


def check_model_dir(
    model_dir: str, hf_subdir: str, model_class: Type[PreTrainedModel]
) -> Optional[str]:
    """Why the Hugging Face model in ``model_dir/hf_subdir`` cannot be loaded, or None.

    Reads only the small files and the weights' header: links stay inside ``model_dir``;
    ``config.json`` and ``preprocessor_config.json`` are JSON objects; ``model.safetensors``
    (the one weights format loaded: no pickles) is as long as its header says, which catches a
    truncated or overwritten file; and its tensors are the names and shapes of the
    ``model_class`` that ``config.json`` builds.
    """
    try:
        _check_model_files(model_dir, hf_subdir, model_class)
    except ModelFilesProblem as problem:
        return str(problem)
    return None


def directory_signature(model_dir: str) -> Tuple:
    """What changes when anything in ``model_dir`` does: every entry's name, link target,
    inode, mode, size and times (ctime too, which chmod and chown move).

    Equal signatures mean a load would read the same files, so its result can be reused.
    """
    signature = []
    for relative, path in _entries(model_dir):
        signature.append((relative, os.path.realpath(path), _stat_key(path, follow=False)))
        signature.append(_stat_key(path, follow=True))
    return tuple(signature)


class FailedLoads:
    """The problems of model directories that failed to load, kept until the directory changes.

    caikit retries a failed lazy load (``runtime.lazy_load_retries``, 2 by default) on every
    request and its poller loads the directory again after each one: three loads per request.
    With this, a directory that did not change answers its remembered problem at the cost of
    a ``stat`` per entry. Thread-safe: caikit loads models in a thread pool.
    """

    def __init__(self, max_entries: int = MAX_REMEMBERED_FAILURES):
        self._max_entries = max_entries
        self._problems: "OrderedDict[str, Tuple[Tuple, str]]" = OrderedDict()
        self._lock = threading.Lock()

    def problem(self, model_dir: str, signature: Tuple) -> Optional[str]:
        """The remembered problem of ``model_dir`` if it still has ``signature``, else None."""
        key = os.path.abspath(model_dir)
        with self._lock:
            remembered = self._problems.get(key)
            if remembered is None or remembered[0] != signature:
                return None
            self._problems.move_to_end(key)
            return remembered[1]

    def remember(self, model_dir: str, signature: Tuple, problem: str) -> None:
        """Keep ``problem`` for ``model_dir`` as long as it has ``signature``."""
        key = os.path.abspath(model_dir)
        with self._lock:
            self._problems[key] = (signature, problem)
            self._problems.move_to_end(key)
            while len(self._problems) > self._max_entries:
                self._problems.popitem(last=False)

    def forget(self, model_dir: str) -> None:
        """Drop what is remembered of ``model_dir`` (it loaded)."""
        with self._lock:
            self._problems.pop(os.path.abspath(model_dir), None)


def client_message(err: BaseException) -> str:
    """``err``'s message as a client may read it: its first line (transformers' load reports run
    to pages), with no server path (``guards.paths.client_safe``)."""
    lines = str(err).strip().splitlines()
    return client_safe(lines[0] if lines else type(err).__name__)


def release_memory() -> None:
    """Give a failed load's memory back to the system.

    A model built by a load that then fails is freed once nothing holds the exception (its
    traceback holds the model; gc breaks the cycles), but glibc keeps the freed blocks in the
    arena of the thread that made them, one of caikit's idle loader threads. A default-size YOLOS
    built in a pool thread, then failed: RSS stayed 340 MB higher after gc alone, and came back
    down with ``malloc_trim`` (2-core development VM).
    """
    return_freed_memory()


def _check_model_files(
    model_dir: str, hf_subdir: str, model_class: Type[PreTrainedModel]
) -> None:
    problem = links_problem(model_dir)
    if problem:
        raise ModelFilesProblem(problem)
    hf_dir = os.path.join(model_dir, hf_subdir)
    if not os.path.isdir(hf_dir):
        raise ModelFilesProblem(f"{hf_subdir}/ is missing")
    config = _read_json_object(hf_dir, hf_subdir, CONFIG_NAME)
    _read_json_object(hf_dir, hf_subdir, IMAGE_PROCESSOR_NAME)
    weights_name = f"{hf_subdir}/{SAFE_WEIGHTS_NAME}"
    weights = _safetensors_shapes(os.path.join(hf_dir, SAFE_WEIGHTS_NAME), weights_name)
    expected = _shapes_of_model(model_class, config, f"{hf_subdir}/{CONFIG_NAME}")
    _compare_shapes(weights, expected, weights_name, f"{hf_subdir}/{CONFIG_NAME}")


def _read_json_object(hf_dir: str, hf_subdir: str, name: str) -> dict:
    relative = f"{hf_subdir}/{name}"
    try:
        with open(os.path.join(hf_dir, name), "rb") as file:
            data = json.loads(file.read())
    except FileNotFoundError:
        raise ModelFilesProblem(f"{relative} is missing") from None
    except OSError as err:
        raise ModelFilesProblem(f"{relative} is not readable: {err.strerror}") from None
    except ValueError as err:  # JSON, or bytes that are not UTF-8
        raise ModelFilesProblem(f"{relative} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ModelFilesProblem(f"{relative} is not a JSON object")
    return data


def _safetensors_shapes(path: str, relative: str) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape from the header of the safetensors file at ``path``, after checking
    that the file holds exactly the bytes the header describes.

    The format: an 8-byte little-endian header length, a JSON header of
    ``{name: {dtype, shape, data_offsets: [begin, end]}}`` (offsets into the data that follows),
    then the data. Parsed here, not by ``safe_open``, which maps the file, and whose errors
    ("incomplete metadata, file not fully covered") do not say what to fix.
    """
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            if file_size < 8:
                raise ModelFilesProblem(f"{relative} is truncated: {file_size} bytes")
            (header_size,) = struct.unpack("<Q", file.read(8))
            if header_size > min(SAFETENSORS_MAX_HEADER_BYTES, file_size - 8):
                raise ModelFilesProblem(
                    f"{relative} is not a safetensors file, or truncated: its header would be "
                    f"{header_size} bytes, the file has {file_size}"
                )
            header = json.loads(file.read(header_size))
    except FileNotFoundError:
        raise ModelFilesProblem(
            f"{relative} is missing (the only weights format loaded)"
        ) from None
    except OSError as err:
        raise ModelFilesProblem(f"{relative} is not readable: {err.strerror}") from None
    except ValueError as err:
        raise ModelFilesProblem(f"{relative} has a header that is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise ModelFilesProblem(f"{relative} has a header that is not a JSON object")
    header.pop("__metadata__", None)

    shapes, spans = {}, []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            valid = (
                dtype in SAFETENSORS_DTYPE_BYTES
                and all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end))
                and end - begin == SAFETENSORS_DTYPE_BYTES[dtype] * math.prod(shape)
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise ModelFilesProblem(f"{relative} has an invalid header entry for {name!r}")
        shapes[name] = tuple(shape)
        spans.append((begin, end))

    promised = 0
    for begin, end in sorted(spans):
        if begin != promised:
            raise ModelFilesProblem(f"{relative} has a header whose tensors overlap or leave gaps")
        promised = end
    actual = file_size - 8 - header_size
    if actual < promised:
        raise ModelFilesProblem(
            f"{relative} is truncated: {file_size} bytes, its header describes "
            f"{8 + header_size + promised}"
        )
    if actual > promised:
        raise ModelFilesProblem(
            f"{relative} has {actual - promised} bytes more than its header describes"
        )
    return shapes


def _shapes_of_model(
    model_class: Type[PreTrainedModel], config: dict, relative: str
) -> Dict[str, Tuple[int, ...]]:
    """Parameter and buffer shapes of the ``model_class`` that ``config`` describes, built on the
    meta device: shapes without storage, so even an absurd config costs no memory."""
    try:
        model_config = model_class.config_class.from_dict(config)
        with torch.device("meta"):
            model = model_class(model_config)
    # Whatever the config makes the model's constructor raise, the directory cannot be served;
    # the message names the exception, for the operator who fixes the file.
    except Exception as err:  # pylint: disable=broad-exception-caught
        raise ModelFilesProblem(
            f"{relative} does not describe a {model_class.__name__}: "
            f"{type(err).__name__}: {err}"
        ) from None
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _compare_shapes(
    weights: Dict[str, Tuple[int, ...]],
    expected: Dict[str, Tuple[int, ...]],
    weights_name: str,
    config_name: str,
) -> None:
    """Raise unless ``weights`` holds exactly the tensors of ``expected``, in its shapes; the
    message counts the tensors that differ and names the first."""
    differing = sorted(
        name for name in weights.keys() & expected.keys() if weights[name] != expected[name]
    )
    if differing:
        name = differing[0]
        raise ModelFilesProblem(
            f"{weights_name} does not fit {config_name}: {len(differing)} tensors differ in "
            f"shape, e.g. {name} is {list(weights[name])} in the weights, "
            f"{list(expected[name])} for the config"
        )
    missing = sorted(expected.keys() - weights.keys())
    if missing:
        raise ModelFilesProblem(
            f"{weights_name} lacks {len(missing)} tensors that {config_name} needs, "
            f"e.g. {missing[0]}"
        )
    extra = sorted(weights.keys() - expected.keys())
    if extra:
        raise ModelFilesProblem(
            f"{weights_name} holds {len(extra)} tensors that {config_name} has no place for, "
            f"e.g. {extra[0]}"
        )


def _entries(model_dir: str) -> Iterator[Tuple[str, str]]:
    """(path relative to ``model_dir``, path) of the directory itself ("") and everything below
    it, in a stable order; links are listed, never followed."""
    yield "", model_dir
    for directory, subdirs, files in os.walk(model_dir):
        subdirs.sort()
        for name in sorted(subdirs + files):
            path = os.path.join(directory, name)
            yield os.path.relpath(path, model_dir).replace(os.sep, "/"), path


def _stat_key(path: str, follow: bool) -> Optional[Tuple[int, ...]]:
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

