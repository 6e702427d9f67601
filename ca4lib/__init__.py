"""The rooms of ca4: everything the coursework module `ca4_helpers` is not.

`ca4_helpers.py` holds what the assignment teaches and a grader marks (data, models, losses,
training). The rooms hold the rest, one concern each; README, *Architecture*, has the map.
Importing this package imports no room.
"""
