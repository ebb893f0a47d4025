#!/usr/bin/env node
// Predict with the caikit computer vision runtime from Node.js, knowing nothing but the .proto
// files that the runtime dumped (protos/): no caikit, no Python, no generated code.
//
//   node clients/node/predict.js --protos protos --target 127.0.0.1:8085 \
//     --model-id new_model --threshold 0.3 train_data/query.jpg
//
// Prints the ObjectDetectionResult as JSON on stdout; exits 1 with the gRPC status on failure.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

// The service file imports the request and result files; includeDirs lets the loader find them.
const SERVICE_PROTO = "computervisionservice.proto";
const SERVICE_NAME = "ccv.ComputerVisionService";

function parseArguments() {
  const { values, positionals } = parseArgs({
    options: {
      protos: { type: "string", default: "protos" },
      target: { type: "string", default: "127.0.0.1:8085" },
      "model-id": { type: "string", default: "my_model" },
      threshold: { type: "string" },
      timeout: { type: "string", default: "30" },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    throw new Error("usage: predict.js [--protos DIR] [--target HOST:PORT] [--model-id ID] " +
      "[--threshold 0..1] [--timeout SECONDS] IMAGE");
  }
  return { ...values, image: positionals[0] };
}

function loadService(protosDir) {
  if (!fs.existsSync(path.join(protosDir, SERVICE_PROTO))) {
    throw new Error(`no ${SERVICE_PROTO} in ${protosDir}: start the runtime with ` +
      "--purge_dirs or run python3 dump_protos.py, then pass --protos DIR");
  }
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [protosDir],
    keepCase: true, // field names exactly as in the .proto files: detected_objects, xmin, ...
    longs: Number, // box coordinates are int64; pixel values fit a JavaScript number
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).ccv.ComputerVisionService;
}

function main() {
  const args = parseArguments();
  const ComputerVisionService = loadService(args.protos);
  const client = new ComputerVisionService(args.target, grpc.credentials.createInsecure());

  const request = { inputs: fs.readFileSync(args.image) };
  if (args.threshold !== undefined) {
    request.threshold = Number(args.threshold); // optional double: unset means the model's default
  }
  // caikit picks the model from this header, as for every other client.
  const metadata = new grpc.Metadata();
  metadata.set("mm-model-id", args["model-id"]);
  const deadline = new Date(Date.now() + Number(args.timeout) * 1000);

  client.ObjectDetectionTaskPredict(request, metadata, { deadline }, (error, result) => {
    client.close();
    if (error) {
      console.error(`${SERVICE_NAME}/ObjectDetectionTaskPredict failed: ` +
        `${grpc.status[error.code]}: ${error.details}`);
      process.exitCode = 1;
      return;
    }
    console.log(JSON.stringify(result, null, 2));
  });
}

try {
  main();
} catch (error) {
  console.error(error.message);
  process.exitCode = 2;
}
