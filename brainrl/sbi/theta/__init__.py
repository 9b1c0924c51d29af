"""Layer 5, θ-targeted generation: (θ*, topic) prompt sets (``prompts``), the θ-target reward a trainer
optimises (``reward``) and the θ validator that judges a tuned generator (``validate``). The top layer:
imports every layer below, nothing imports it back except entry points and reward files."""
