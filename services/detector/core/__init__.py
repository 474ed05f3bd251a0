"""PURE compliance core: no faust, aiokafka, fastapi, pydantic, sqlalchemy or prometheus.

Only the standard library, plus `holidays` and `phonenumbers` behind small functions.
"""
