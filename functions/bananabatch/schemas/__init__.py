"""JSON Schemas for the messages bananabatch publishes; shipped as package data."""
