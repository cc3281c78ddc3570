"""Routing: the flags that tell the application which schema to read and write
(:mod:`.flags`), and the seed's 1 % read ramp that moves them (:mod:`.ramp`)."""
