"""Results and reports: one results schema (``results``), one renderer per kind (``render``,
``plots``), comparisons between runs (``compare``) and the VOEvent 3 evidence (``evidence``).

Nothing here measures: every function reads or writes results documents, so a report or a
comparison can be redone from the JSON alone. Submodules are imported where they are used; this
package imports none of them, so reading a results file never pulls in matplotlib.
"""
