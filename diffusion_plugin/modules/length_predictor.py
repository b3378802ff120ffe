"""The separately trained length predictor of Ye et al. (2023), §A.1 (docs/METHOD.md §5)."""

import torch.nn as nn
from torch import Tensor


class LengthPredictor(nn.Module):
    """One transformer layer over the frozen backbone's prompt features, a masked
    mean pool and a two-layer MLP over ``num_classes`` lengths (class k = k+1
    target tokens).

    The layer is PyTorch's ``nn.TransformerEncoderLayer`` with its defaults (post-LN,
    ReLU, dropout 0.1), and the module names ``length_trm`` / ``length_predictor``
    follow the released Diffusion-LLM checkpoints.
    """

    def __init__(self, embed_dim: int, attention_heads: int, ffn_dim: int, num_classes: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            embed_dim, attention_heads, dim_feedforward=ffn_dim, batch_first=True
        )
        self.length_trm = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.length_predictor = nn.Sequential(
            nn.Linear(embed_dim, ffn_dim), nn.Tanh(), nn.Linear(ffn_dim, num_classes)
        )

    def forward(self, features: Tensor, padding_mask: Tensor) -> Tensor:
        """features (B, S, H) of ``<s> prompt``, padding_mask (B, S) True at pads -> (B, C),
        computed in the dtype of the predictor's weights."""
        features = features.to(self.length_predictor[0].weight.dtype)
        hidden = self.length_trm(features, src_key_padding_mask=padding_mask)
        keep = (~padding_mask).unsqueeze(-1).type_as(hidden)
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.length_predictor(pooled)
