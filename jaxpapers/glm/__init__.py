"""GLM-130B (Zeng et al., arXiv 2210.02414): model, blank-infilling objective, generation."""
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.glm.objective import attention_mask
