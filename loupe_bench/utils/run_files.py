"""The names of the files of a run / model folder (no torch: readers such as the report import them cheaply).

A model folder (``save_model``) holds :data:`WEIGHTS_FILE`, :data:`CONFIG_FILE` and :data:`TOKENIZER_DIR`; a
training run adds :data:`RUN_FILE` (its identity, written first, schema :data:`RUN_SCHEMA`), :data:`LOG_FILE`
(one JSON object per step), :data:`RECIPE_FILE` (the resolved recipe) and :data:`CHECKPOINT_DIR` with
``step_<N>`` folders and a :data:`LATEST` pointer. Reading and writing them is :mod:`loupe_bench.models.checkpoint`'s
job (the model directory) and :mod:`loupe_bench.train.resume`'s (the training state).
"""
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
RECIPE_FILE = "recipe.yaml"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STEP_PREFIX = "step_"
RUN_SCHEMA = "loupe-bench/run/v1"
