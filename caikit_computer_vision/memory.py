"""Giving memory back to the system after work that needed a lot of it.

glibc keeps freed blocks in the arena of the thread that freed them: after a failed model load,
a training, or the decode of a 40-megapixel image, the process's RSS stays as high as at its
peak, and each such request on another pool thread raises it again (idle RSS ratcheted from 1.55
to 2.0 GB over a few big images). ``malloc_trim`` hands the free pages back; it costs well under
a millisecond when there is little to return.
"""

# Standard
import ctypes
import gc


def _load_malloc_trim():
    """glibc's malloc_trim, or None: musl and macOS have none (nor glibc's per-thread arenas)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_malloc_trim = _load_malloc_trim()


def return_freed_memory(collect_cycles: bool = True) -> None:
    """Free what only reference cycles still hold (``collect_cycles``: tens of milliseconds with
    a model loaded), then give the free pages back to the system."""
    if collect_cycles:
        gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
