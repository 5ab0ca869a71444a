"""The Pets room (chapter 5): the Oxford-IIIT Pets file layout, the generated stand-in, presizing, the presized
data and its batch transforms, and the transfer-learning model with fastai's head and layer groups."""

ARCHS = ("resnet18", "resnet34", "resnet50")  # torchvision bodies the model is built on
