"""cistern.control"""
