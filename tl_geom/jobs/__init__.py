"""A model over corpus windows, reduced to tables: ``analyze``, ``sparsify`` and their parts.

``analyze`` (the main job), ``window`` (one window reduced inside the forward),
``results`` (tables in memory and on disk), ``sparsify`` (head removal by rule),
``distributed`` (windows split across ``torchrun`` ranks).
"""
