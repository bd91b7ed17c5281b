"""The portal's browser fixtures (a ``levere serve`` and Chromium), for every browser test here."""

from tests.web.test_portal_browser import browser, portal  # noqa: F401
