"""The api: consumes alerts and stats into a relational store and serves them over HTTP."""
