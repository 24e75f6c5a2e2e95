"""``rigorous-recorder ui``: a local dashboard to watch and compare a collection's runs.

Needs the ``ui`` extra (Starlette, uvicorn): ``pip install "rigorous-recorder[ui]"``.

>>> dashboard = serve("data/my_study")  # doctest: +SKIP
>>> print(dashboard.url)  # doctest: +SKIP
http://127.0.0.1:41235/?token=...
>>> dashboard.stop()  # doctest: +SKIP
"""

from __future__ import annotations

from .server import Dashboard, serve

__all__ = ["Dashboard", "serve"]
