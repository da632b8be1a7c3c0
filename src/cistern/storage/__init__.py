"""cistern.storage"""
