"""capfile"""
