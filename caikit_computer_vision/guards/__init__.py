"""Runtime guards: keep every model id and path a client sends inside the configured directories.

caikit 0.29 trusts clients with paths: the lazy loader joins ``mm-model-id`` to
``local_models_dir`` and, when that does not exist, loads the id itself as a path; the train
request's paths are read as given; ``DeployModel`` / ``UndeployModel`` join ids and file names
to ``local_models_dir`` without normalising them. These guards plug into caikit's own extension
points (a model finder and a model trainer named in runtime_config.yaml, and a wrapper around the
runtime's model manager installed by ``runtime_server``), so caikit itself is unchanged.
"""
