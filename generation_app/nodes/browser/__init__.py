"""Browser-rendered nodes (js, p5, p52vid): headless Chromium driven by Playwright.

Importing this package starts nothing; Chromium is launched by the first render in a process.
"""
