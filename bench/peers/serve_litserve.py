"""LitServe doing the runtime's model call, with or without its dynamic batching.

    bench/.peer_venvs/litserve/bin/python -m bench.peers.serve_litserve \
        --model my_model=DIR/hf_model --port PORT [--max-batch-size 8]

POST ``/predict`` with ``{"model": name, "inputs": <base64 JPEG>, "threshold": t}``; the answer
is ``{"detections": rows}``. With ``--max-batch-size 8`` LitServe collects up to 8 requests
for ``BATCH_TIMEOUT_S`` and ``predict`` runs them as one ``Detector.detect`` call per model.
LitServe runs the API server and the inference worker in processes of their own.
"""

# Standard
import base64

# Third Party
import litserve

# Local
from bench.peers.protocol import (
    LITSERVE_ROUTE,
    LOOPBACK,
    answer_rows,
    detect_grouped,
    load_detectors,
    parse_models,
    server_arguments,
)

# How long LitServe waits to fill a batch (its loop polls its queue every millisecond).
BATCH_TIMEOUT_S = 0.005


class DetectorAPI(litserve.LitAPI):
    def __init__(self, models: dict, max_batch_size: int):
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=BATCH_TIMEOUT_S if max_batch_size > 1 else 0.0,
            api_path=LITSERVE_ROUTE,
        )
        self.models = models

    def setup(self, device):
        self.detectors = load_detectors(self.models)

    def decode_request(self, request, **kwargs):
        return (request["model"], base64.b64decode(request["inputs"]), float(request["threshold"]))

    def predict(self, x, **kwargs):
        if self.max_batch_size > 1:
            return [answer_rows(found) for found in detect_grouped(self.detectors, x)]
        model, image, threshold = x
        return answer_rows(self.detectors[model].detect([image], threshold)[0])

    def encode_response(self, output, **kwargs):
        return {"detections": output}


def main() -> None:
    parser = server_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--max-batch-size", type=int, default=1, help="1: no batching")
    args = parser.parse_args()
    server = litserve.LitServer(
        DetectorAPI(parse_models(args.model), args.max_batch_size), accelerator="cpu"
    )
    server.run(host=LOOPBACK, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
