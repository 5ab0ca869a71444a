"""The MNIST room (chapter 4): the digits raw and prepared, the lesson written by hand (pixel similarity, the
linear model), the two networks, and the training recipe of each model."""

MODELS = ("linear", "simple_net", "resnet18")  # train_mnist@<model>, each with its block under mnist_models
DISTANCES = ("l1", "l2")  # pixel similarity: mean absolute difference, root mean squared difference
