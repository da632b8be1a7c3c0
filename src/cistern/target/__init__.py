"""cistern.target"""
