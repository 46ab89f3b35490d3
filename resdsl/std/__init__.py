"""The standard library of blocks: ``import std.resnet`` in a spec reads ``resnet.res`` here.

A Python package only so the ``.res`` files ship inside the wheel; it has no Python API.
"""
