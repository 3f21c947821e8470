"""calsync: the calendar-sync server of an online scheduling platform.

One import namespace over the repository's top-level folders: `calsync.models` (SQLAlchemy),
`calsync.feeds` (the calendar core), `calsync.web` (Flask), plus `calsync.templates`,
`calsync.migrations` and `calsync.bench`. In a checkout these are links to ../models, ../feeds, ...
(the folders keep the places the project was specified with); an installed wheel holds real
copies. Importing this package does nothing.
"""
