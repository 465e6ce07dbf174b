"""xlir serve: one process that owns the index and answers a JSON API and a web page over it.

    service.py    Service: the operations the API offers, over one Index (safe for threads)
    jobs.py       background index jobs, their progress and summary
    thumbs.py     EXIF-oriented JPEG thumbnails, cached on disk within a size bound
    app.py        the ASGI app (FastAPI): routes, the token and host rules, limits, errors
    server.py     uvicorn on a bound socket, the discovery file, start and stop
    discovery.py  <store>/xlir-serve.json: how other xlir processes find a running server
    client.py     RemoteIndex: what the CLI uses instead of Index while a server holds the store
    web/          the page (plain HTML, CSS and JavaScript; nothing fetched from elsewhere)

Nothing here is imported by a plain CLI command unless a server is running: the web stack
loads only for `xlir serve`.
"""
