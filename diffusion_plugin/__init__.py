"""diffusion_plugin: diffusion language models from pretrained masked LMs, for fairseq.

Importing the package (``--user-dir diffusion_plugin``) registers the
``diffusion_xlmr`` model, the ``masked_diffusion`` and ``length_prediction``
criteria, the ``prompted_translation`` task and the ``rouge`` scorer (``--scoring rouge``),
gives ``--scoring sacrebleu`` sacreBLEU's signature, and lets torch >= 2.6 load fairseq
checkpoints. The tools of ``scripts/``
(``diffusion_plugin.tools``) are not imported.
"""

from diffusion_plugin import checkpoint_loading, scoring  # noqa: F401
from diffusion_plugin.criterions import length_prediction, masked_diffusion  # noqa: F401
from diffusion_plugin.models import diffusion_xlmr  # noqa: F401
from diffusion_plugin.tasks import prompted_translation  # noqa: F401
from diffusion_plugin.hub_interface import DiffusionHubInterface, from_pretrained  # noqa: F401
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRModel  # noqa: F401
