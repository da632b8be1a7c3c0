"""cistern.cli"""
