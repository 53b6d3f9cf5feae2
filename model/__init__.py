"""MCN-CL: the causal multimodal emotion model, its features, data, training and checkpoints."""
