"""Collectors: wallet sign-in, paid generations of published collections verified on chain, and
collects that run them (the existing platform's mini-app flow, tables `miniapp_*`).

An app of its own inside generation_app, the top layer: a collect runs a job through
generation_app's request services, and a collect row links a job (jobs_app) to a collection
(collections_app), which only the top layer may import together.
"""
