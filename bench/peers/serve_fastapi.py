"""A plain FastAPI server (uvicorn) doing the runtime's model call: what a user writes by hand.

    python -m bench.peers.serve_fastapi --model my_model=DIR/hf_model --port PORT

POST ``/detect/<model>`` with JSON ``{"inputs": <base64 JPEG>, "threshold": t}``; the answer is
``{"detections": rows}`` (bench/peers/protocol.py). The route is a plain ``def``, so FastAPI runs
it on its thread pool, as most hand-written model servers do.
"""

# Standard
import base64

# Third Party
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
import uvicorn

# Local
from bench.peers.protocol import (
    FASTAPI_ROUTE,
    LOOPBACK,
    answer_rows,
    load_detectors,
    parse_models,
    server_arguments,
)


class DetectRequest(BaseModel):
    inputs: str
    threshold: float


def build_app(detectors: dict) -> FastAPI:
    app = FastAPI()

    @app.post(FASTAPI_ROUTE)
    def detect(model: str, request: DetectRequest) -> dict:
        if model not in detectors:
            raise HTTPException(404, f"no model {model!r}")
        detections = detectors[model].detect([base64.b64decode(request.inputs)], request.threshold)
        return {"detections": answer_rows(detections[0])}

    return app


def main() -> None:
    args = server_arguments(__doc__.split("\n\n")[0]).parse_args()
    app = build_app(load_detectors(parse_models(args.model)))
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
