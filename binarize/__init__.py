"""binarize: turn pretrained PyTorch networks into binary neural networks."""
