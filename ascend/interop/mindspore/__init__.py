"""MindSpore Transformers checkpoints: the one adapter package.

- ``names``   the naming table and declared transforms, HF <-> MindSpore (data, no torch);
- ``io``      MindSpore files in and out through the ``mindspore`` package (the optional extra);
- ``layout``  the transforms applied, file planning and writing, and ``MindSporeSource`` (a
              MindSpore checkpoint under HF names);
- ``convert`` the converter's source and layout adapters (``ascend.convert.adapters``).

Nothing here imports ``mindspore`` at import time: without the extra every entry point raises
one ``BackendUnavailable`` line saying how to install it.
"""
