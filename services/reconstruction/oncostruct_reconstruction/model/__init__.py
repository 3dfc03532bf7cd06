"""The nearest-normal-image model: preprocessing, scoring and metrics (numpy), network and export (torch).

``preprocess``, ``scoring``, ``metrics``, ``anomalies`` and ``volumes`` need
numpy/scipy only and are what the service imports. ``network``, ``training``
and ``export`` need torch: install the ``[train]`` extra to use them; the
serving image never imports them.
"""
