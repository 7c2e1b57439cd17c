"""Thin handlers, one module per API family: parse, call one domain function, render."""
