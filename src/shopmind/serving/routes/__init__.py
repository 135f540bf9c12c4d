"""The API's routers, one per domain; `serving.app.create_app` includes them all."""
