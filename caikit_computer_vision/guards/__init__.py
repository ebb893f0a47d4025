"""Runtime guards: every request is checked once, and every model id and path stays inside the
configured directories.

caikit 0.29 serves more than this example needs and trusts clients with paths: the lazy loader
joins ``mm-model-id`` to ``local_models_dir`` and, when that does not exist, loads the id itself
as a path; the train request's paths are read as given; ``DeployModel`` / ``UndeployModel`` and
``mmesh.ModelRuntime`` take any id and path. ``front_door`` (with ``grpc_door`` and
``http_door``) checks every call in front of caikit; caikit's own extension points, named in
runtime_config.yaml, check again where caikit acts: a model finder (``models_dir_finder``) and a
model trainer (``guarded_trainer``). ``limits`` reads the limits they share from the config.
"""
