from flamingo_vlm.model.flamingo import Flamingo, FlamingoOutput
from flamingo_vlm.model.resampler import PerceiverResampler
from flamingo_vlm.model.xattn import GatedCrossAttentionDense, MaskedCrossAttention

__all__ = ["Flamingo", "FlamingoOutput", "GatedCrossAttentionDense", "MaskedCrossAttention", "PerceiverResampler"]
