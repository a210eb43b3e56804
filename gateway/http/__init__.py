"""The only gateway package that imports Starlette."""
