"""The ``cnnkit`` command line: the only code that prints for the user.

``main.py`` holds the parser and ``main`` (the console script's entry point,
``cnnkit.cli.main:main``) and turns errors into one line; each other module adds one
group of sub-commands and calls the library. Nothing in the library imports this package.
"""
