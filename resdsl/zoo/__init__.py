"""The model zoo: specs of the architectures users arrive with, one ``.res`` file per family.

Every network defined here is a model, named as its torchvision builder (``resnet50``,
``convnext_tiny``): ``resdsl.load("zoo:resnet50")``, ``resdsl info zoo:resnet50``,
``resdsl.create_model("resnet50")``. A Python package only so the files ship inside the
wheel; the names are resolved by :mod:`resdsl.loader`.
"""
