"""Names shared across the plugin's modules; imports nothing from the plugin."""

MASK_SYMBOL = "<mask>"
"""The dictionary symbol of the absorbing state."""

PROMPT_TEMPLATE_FILE = "prompt_template.txt"
"""File name of the prompt template (one line with {src}) in a data directory."""

SENTENCEPIECE_MODEL = "sentencepiece.bpe.model"
"""File name of the sentencepiece model in a data directory."""

DATA_IDENTITY_KEY = "data_identity"
"""Key of a checkpoint's task state: the fingerprint of the data it was trained on."""

CHECKPOINT_PATH_KEY = "loaded_from"
"""Key the loader adds to a loaded checkpoint's task state: the file it was read from."""
